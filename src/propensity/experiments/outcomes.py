"""Outcomes: what each scored customer actually did in the action's horizon after being scored.

For a score row ``(customer, action, scored_at)`` the outcome is the action's label at ``t``, with
the same definition training uses (:mod:`propensity.labels`): a target event with ``event_time`` in
``(t + gap, t + gap + horizon]`` (for ``outcome: absent`` actions such as churn, the absence of one). Only
matured rows are returned: ``t + gap + horizon + label_delay`` at or before the end of the data, so a window
still open never counts as "did not happen". ``t`` (``window_start`` in the result) is the row's ``as_of`` when
the rows carry one, the moment the score is about (a backfilled run's is in the past), otherwise ``scored_at``.

A trigger action's label (``respond``) asks for a target event of the same campaign; a score row carries no
campaign, so here any target event in the window counts.
"""

from __future__ import annotations

from datetime import datetime

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from propensity.config.spec import ProjectSpec
from propensity.core.clock import maturity_horizon
from propensity.core.errors import PropensityError
from propensity.events.clock import label_horizon, newest_event_time
from propensity.labels.labels import event_filter_sql

OUTCOME_COLUMNS = ("customer_id", "action", "window_start", "holdout_group", "segment", "score", "outcome",
                   "window_end")  # fmt: skip
REQUIRED = ("customer_id", "action", "scored_at", "holdout_group")


class ScoreRowsError(PropensityError):
    """Score rows lack a column outcomes need."""


def data_end(con: duckdb.DuckDBPyConnection, spec: ProjectSpec) -> datetime | None:
    """Where outcome windows may have closed up to: the newest event time, never later than
    ``training.spine.data_end`` when declared (:func:`propensity.events.clock.label_horizon`)."""
    return label_horizon(con, declared=spec.training.spine.data_end)


def _empty() -> pa.Table:
    ts = pa.timestamp("us", tz="UTC")
    return pa.table(
        {
            "customer_id": pa.array([], pa.string()),
            "action": pa.array([], pa.string()),
            "window_start": pa.array([], ts),
            "holdout_group": pa.array([], pa.string()),
            "segment": pa.array([], pa.string()),
            "score": pa.array([], pa.float64()),
            "outcome": pa.array([], pa.int8()),
            "window_end": pa.array([], ts),
        }
    )


def outcomes(
    con: duckdb.DuckDBPyConnection,
    spec: ProjectSpec,
    score_rows: pa.Table,
    *,
    end: datetime | None = None,
    eligible_only: bool = True,
) -> pa.Table:
    """The matured score rows of ``score_rows`` with their ``outcome`` (0/1) and ``window_end``.

    ``con`` holds the event log (``events`` table). ``end`` is where the data is complete up to (default:
    :func:`data_end`). Rows of actions the project does not declare raise :class:`ScoreRowsError`; ineligible
    rows are left out unless ``eligible_only`` is false.
    """
    missing = [c for c in REQUIRED if c not in score_rows.column_names]
    if missing:
        raise ScoreRowsError(
            f"score rows lack column(s) {', '.join(missing)}; expected the canonical score row"
        )
    rows = score_rows
    if eligible_only and "eligible" in rows.column_names:
        rows = rows.filter(pc.fill_null(rows.column("eligible"), False))
    for col, typ in (("segment", pa.string()), ("score", pa.float64())):
        if col not in rows.column_names:
            rows = rows.append_column(col, pa.nulls(rows.num_rows, typ))
    # The window opens when the score is about: a run's as_of (a backfill scores the past), else scored_at.
    start = rows.column("as_of") if "as_of" in rows.column_names else rows.column("scored_at")
    rows = rows.select(["customer_id", "action", "holdout_group", "segment", "score"])
    rows = rows.add_column(2, "window_start", start.cast(pa.timestamp("us", tz="UTC")))
    if rows.num_rows == 0:
        return _empty()
    # Never past the newest event, even when the caller asks for a later end: an open window is no outcome.
    limit = maturity_horizon(newest_event_time(con), declared=end or spec.training.spine.data_end)
    if limit is None:
        return _empty()
    known = {a.name for a in spec.actions}
    parts = []
    for name in sorted(set(rows.column("action").to_pylist())):
        if name not in known:
            raise ScoreRowsError(
                f"score rows have action {name!r}, which propensity.yaml does not declare; "
                f"declared: {', '.join(sorted(known)) or '(none)'}"
            )
        action = spec.action(name)
        gap_s, h_s, delay_s = action.gap.seconds, action.horizon.seconds, action.label_delay.seconds
        occurs = "count(e.customer_id) > 0"
        label = occurs if action.outcome == "occurs" else f"NOT ({occurs})"
        con.register("_score_rows", rows.filter(pc.equal(rows.column("action"), name)))
        try:
            sql = f"""
                WITH s AS (
                    SELECT *, row_number() OVER () AS _i FROM _score_rows
                    WHERE window_start + INTERVAL '{int(gap_s + h_s + delay_s)} seconds' <= $end
                ),
                tgt AS (SELECT customer_id, event_time FROM events WHERE {event_filter_sql(action.target)})
                SELECT s.customer_id, s.action, s.window_start, s.holdout_group, s.segment, s.score,
                       CAST({label} AS TINYINT) AS outcome,
                       s.window_start + INTERVAL '{int(gap_s + h_s)} seconds' AS window_end
                FROM s LEFT JOIN tgt e ON e.customer_id = s.customer_id
                     AND e.event_time > s.window_start + INTERVAL '{int(gap_s)} seconds'
                     AND e.event_time <= s.window_start + INTERVAL '{int(gap_s + h_s)} seconds'
                GROUP BY s._i, s.customer_id, s.action, s.window_start, s.holdout_group, s.segment, s.score
                ORDER BY s._i
            """
            part: pa.Table = con.sql(sql, params={"end": limit}).to_arrow_table()
            parts.append(part)
        finally:
            con.unregister("_score_rows")
    schema = _empty().schema
    return pa.concat_tables([p.cast(schema) if p.num_rows else _empty() for p in parts])
