"""The rule-based fallback: a deterministic recency × frequency score per action, for when there is no model.

Used when an action has no trained model in the production bundle, or when a customer's features are stale. It
needs nothing but the event log: the days since the customer's last relevant event (the action's target events;
for ``outcome: absent`` actions such as churn, its activity events) and how many there were in the last 90 days.
Those fall into tiers, and each tier has a fixed score. The scores are honest ranks, not calibrated
probabilities, so every one is flagged ``fallback = true`` wherever it appears (score rows, API, exports).

>>> from propensity.config.actions import Action
>>> buy = Action.model_validate({"template": "buy"})
>>> fallback_score(buy, days_since_last=2.0, count_90d=5)
FallbackScore(score=0.45, recency_tier=0, frequency_tier=2, fallback=True)
>>> fallback_score(buy, days_since_last=None, count_90d=0).score
0.012
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from propensity.config.actions import Action
from propensity.labels.labels import event_filter_sql

RECENCY_EDGES_DAYS = (7.0, 30.0, 90.0)  # tiers: ≤7d, ≤30d, ≤90d, older or never
FREQUENCY_EDGES = (1, 3)  # tiers (events in 90 days): 0, 1–2, 3+
# Score of the most recent tier, by recency tier; frequency multiplies it.
_OCCURS = (0.30, 0.15, 0.06, 0.02)
_ABSENT = (0.05, 0.20, 0.50, 0.85)
_OCCURS_FREQ = (0.6, 1.0, 1.5)
_ABSENT_FREQ = (1.3, 1.0, 0.7)


@dataclass(frozen=True)
class FallbackScore:
    score: float
    recency_tier: int
    frequency_tier: int
    fallback: bool = True


def fallback_score(action: Action, *, days_since_last: float | None, count_90d: int) -> FallbackScore:
    """The tiered score of one customer for one action (pure; the same inputs always give the same score)."""
    r = (
        len(RECENCY_EDGES_DAYS)
        if days_since_last is None
        else bisect.bisect_left(RECENCY_EDGES_DAYS, days_since_last)
    )
    f = bisect.bisect_right(FREQUENCY_EDGES, count_90d)
    score = _ABSENT[r] * _ABSENT_FREQ[f] if action.outcome == "absent" else _OCCURS[r] * _OCCURS_FREQ[f]
    return FallbackScore(round(min(score, 0.95), 6), r, f)


def fallback_scores(con: duckdb.DuckDBPyConnection, action: Action, spine: pa.Table) -> pa.Table:
    """Fallback scores for a spine (``customer_id``, ``as_of``), using only events visible at ``as_of``.

    Returns ``customer_id, as_of, action, score, recency_tier, frequency_tier, fallback`` in spine order.
    """
    types = action.activity_types if action.outcome == "absent" else action.target.event_type
    from propensity.config.actions import EventFilter

    cond = event_filter_sql(
        EventFilter(event_type=types, where=None if action.outcome == "absent" else action.target.where)
    )
    ids = pa.array(range(spine.num_rows), pa.int64())
    s = pa.table({"_rid": ids, "customer_id": spine.column("customer_id").cast(pa.string()),
                  "as_of": spine.column("as_of").cast(pa.timestamp("us", tz="UTC"))})  # fmt: skip
    con.register("_fallback_spine", s)
    try:
        rows = con.sql(
            f"""
            SELECT s._rid,
                   date_diff('second', max(e.event_time), any_value(s.as_of)) / 86400.0 AS days,
                   count(e.event_time) FILTER (WHERE e.event_time > s.as_of - INTERVAL 90 DAY) AS n90
            FROM _fallback_spine s LEFT JOIN (SELECT customer_id, event_time, available_at FROM events WHERE {cond}) e
              ON e.customer_id = s.customer_id AND e.event_time <= s.as_of AND e.available_at <= s.as_of
            GROUP BY s._rid ORDER BY s._rid
            """
        ).fetchall()
    finally:
        con.unregister("_fallback_spine")
    scored = [fallback_score(action, days_since_last=d, count_90d=int(n)) for _, d, n in rows]
    return pa.table(
        {
            "customer_id": s.column("customer_id"),
            "as_of": s.column("as_of"),
            "action": pa.array([action.name] * spine.num_rows, pa.string()),
            "score": pa.array([x.score for x in scored], pa.float64()),
            "recency_tier": pa.array([x.recency_tier for x in scored], pa.int8()),
            "frequency_tier": pa.array([x.frequency_tier for x in scored], pa.int8()),
            "fallback": pa.array([True] * spine.num_rows, pa.bool_()),
        }
    )
