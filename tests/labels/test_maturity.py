"""No matured-label computation counts an outcome window that reaches past the newest event.

One property over every place labels mature: training sets (and the leakage audit, which builds its rows the
same way: ``data_range`` → ``matured_cutoffs`` → ``build_labels``), monitoring's calibration periods
(``label_horizon`` → ``matured_periods`` → ``build_labels``), experiment outcomes (``outcomes``), and
retraining's comparison window (the challenger's test split, built by training's path above; checked on a real
retrain in ``tests/retraining/test_retrain.py``). Random logs, actions, clocks and declared data ends; the wall clock
or a declared end far past the data must never make a window count as closed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.experiments.eventlog import score_rows
from tests.labels.test_labels import ev, log

from propensity.config.actions import Action
from propensity.config.spec import parse_spec
from propensity.config.training import SpineSettings
from propensity.events.clock import label_horizon, newest_event_time
from propensity.experiments.outcomes import outcomes
from propensity.labels.labels import build_labels
from propensity.labels.spines import data_range, grid_cutoffs, matured_cutoffs
from propensity.monitoring.runner import matured_periods

START = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)

ACTIONS = st.sampled_from(["buy", "churn", "respond"]).flatmap(
    lambda template: st.fixed_dictionaries(
        {
            "template": st.just(template),
            "horizon": st.sampled_from(["1d", "3d", "7d", "14d"]),
            "gap": st.sampled_from(["0s", "12h", "1d"]),
            "label_delay": st.sampled_from(["0s", "6h", "2d"]),
        }
    )
)


@st.composite
def event_logs(draw: Any) -> list[dict[str, Any]]:
    days = draw(st.integers(15, 60))
    n = draw(st.integers(5, 60))
    events = []
    for i in range(n):
        t = START + HOUR * draw(st.integers(0, days * 24))
        kind = draw(st.sampled_from(["page_view", "purchase", "campaign_sent"]))
        late = HOUR * draw(st.sampled_from([0, 0, 0, 3, 30]))
        extra = {"campaign_id": f"k{i % 3}"} if kind in ("campaign_sent", "purchase") else {}
        events.append(ev(f"c{i % 6}", kind, t, available_at=t + late, **extra))
    return events


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=event_logs(),
    action_def=ACTIONS,
    as_of_shift_h=st.integers(-24 * 10, 24 * 40),
    declared_shift_h=st.one_of(st.none(), st.integers(-24 * 5, 24 * 30)),
    slide=st.sampled_from(["1d", "7d"]),
)
def test_no_matured_label_reaches_past_the_newest_event(
    events: list[dict[str, Any]],
    action_def: dict[str, Any],
    as_of_shift_h: int,
    declared_shift_h: int | None,
    slide: str,
) -> None:
    con = log(events)
    action = Action.model_validate(action_def)
    newest = newest_event_time(con)
    assert newest is not None
    delay = action.label_delay.timedelta
    declared = None if declared_shift_h is None else newest + HOUR * declared_shift_h
    spine = SpineSettings(slide=slide, lookback="2d", data_end=declared)
    step, align = spine.slide.timedelta, spine.align

    def closed_by(ends: pa.ChunkedArray, limit: datetime) -> bool:
        # label_end is as_of + gap + horizon; the label delay must fit too.
        return all(e + delay <= limit for e in ends.to_pylist())

    # Training (and the leakage audit): the data range, its matured cutoffs, their labels.
    dr = data_range(con, spine)
    assert dr.end <= newest
    cutoffs = matured_cutoffs(grid_cutoffs(spine, dr.start, dr.end), action, dr.end)
    assert all(c + action.span.timedelta <= newest for c in cutoffs)
    if cutoffs:
        rows = build_labels(con, action, cutoffs, slide=step, align=align, data_end=dr.end)
        assert closed_by(rows.column("label_end"), newest)

    # Monitoring: calibration periods as of a wall clock anywhere from before the data's end to weeks after.
    as_of = newest + HOUR * as_of_shift_h
    horizon = label_horizon(con, as_of=as_of, declared=declared)
    seen = newest_event_time(con, as_of)
    if horizon is not None:
        assert seen is not None and horizon <= seen <= newest
        periods = matured_periods(action, horizon, align=align, slide=step, start=dr.start, count=4)
        for period in periods:
            rows = build_labels(con, action, [period], slide=step, align=align, data_end=horizon)
            assert closed_by(rows.column("label_end"), seen)

    # Experiments: outcomes of score rows about any time, even when the caller claims a later data end.
    spec = parse_spec({"actions": [action_def]})
    times = [newest + HOUR * k for k in (-24 * 20, -24 * 3, -5, 0, 24, 24 * 15)]
    scored = score_rows(
        [{"customer_id": f"c{i % 6}", "action": action.name, "scored_at": t} for i, t in enumerate(times)]
    )
    got = outcomes(con, spec, scored, end=as_of + timedelta(days=60))
    assert closed_by(got.column("window_end"), newest)
    if got.num_rows:
        assert pc.max(got.column("window_start")).as_py() + action.span.timedelta <= newest
