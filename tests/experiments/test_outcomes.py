"""Outcomes per score row: the action's label in (t, t + horizon] from the event log, matured rows only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.experiments.eventlog import make_workspace, score_rows

from propensity.events.log import DuckDBEventLog
from propensity.experiments.outcomes import ScoreRowsError, outcomes

T = datetime(2026, 3, 2, tzinfo=UTC)
D = timedelta(days=1)


@pytest.fixture
def ws(tmp_path: Path):  # type: ignore[no-untyped-def]
    events = [
        ("a", "purchase", T + D),  # inside the window
        ("b", "purchase", T),  # at the scoring time itself: before the window
        ("c", "purchase", T + 7 * D),  # on the window's last instant: inside
        ("d", "purchase", T + 7 * D + timedelta(seconds=1)),  # just after: outside
        ("g", "page_view", T + 3 * D),  # active: not churned
        ("z", "page_view", T + 40 * D),  # the data reaches T + 40d
    ]
    return make_workspace(tmp_path, events, actions=[{"template": "buy"}, {"template": "churn"}])


def _outcomes(ws, rows):  # type: ignore[no-untyped-def]
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        return outcomes(con, ws.spec, rows)


def test_the_outcome_window_is_open_at_the_start_and_closed_at_the_end(ws) -> None:  # type: ignore[no-untyped-def]
    rows = score_rows([{"customer_id": c, "action": "buy_7d", "scored_at": T} for c in "abcde"])
    out = _outcomes(ws, rows)
    got = dict(zip(out.column("customer_id").to_pylist(), out.column("outcome").to_pylist(), strict=True))
    assert got == {"a": 1, "b": 0, "c": 1, "d": 0, "e": 0}
    assert set(out.column("window_end").to_pylist()) == {T + 7 * D}


def test_unmatured_and_ineligible_rows_are_left_out(ws) -> None:  # type: ignore[no-untyped-def]
    rows = score_rows(
        [
            {"customer_id": "a", "action": "buy_7d", "scored_at": T},
            # T + 35d + 7d is past the data's end (T + 40d): the window is still open.
            {"customer_id": "a", "action": "buy_7d", "scored_at": T + 35 * D},
            {"customer_id": "c", "action": "buy_7d", "scored_at": T, "eligible": False, "score": None},
        ]
    )
    out = _outcomes(ws, rows)
    assert out.num_rows == 1 and out.column("window_start").to_pylist() == [T]


def test_churn_is_the_absence_of_activity(ws) -> None:  # type: ignore[no-untyped-def]
    rows = score_rows([{"customer_id": c, "action": "churn_30d", "scored_at": T} for c in ("g", "q")])
    out = _outcomes(ws, rows)
    got = dict(zip(out.column("customer_id").to_pylist(), out.column("outcome").to_pylist(), strict=True))
    assert got == {"g": 0, "q": 1}


def test_a_run_as_of_in_the_past_opens_the_window_there(ws) -> None:  # type: ignore[no-untyped-def]
    rows = score_rows([{"customer_id": "a", "action": "buy_7d", "scored_at": T + 39 * D}])
    assert _outcomes(ws, rows).num_rows == 0  # scored near the end of the data: not matured
    backfill = score_rows([{"customer_id": "a", "action": "buy_7d", "scored_at": T + 39 * D, "as_of": T}])
    out = _outcomes(ws, backfill)
    assert out.column("outcome").to_pylist() == [1] and out.column("window_start").to_pylist() == [T]


def test_an_undeclared_action_is_a_clear_error(ws) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ScoreRowsError, match=r"upgrade_30d.*declared: buy_7d, churn_30d"):
        _outcomes(ws, score_rows([{"customer_id": "a", "action": "upgrade_30d", "scored_at": T}]))
