"""The rule-based fallback: deterministic tiers, visibility at the scoring time, and every score flagged."""

from __future__ import annotations

import pyarrow as pa
from tests.labels.test_labels import day, ev, log

from propensity.config.actions import Action
from propensity.scoring.fallback import fallback_score, fallback_scores

BUY = Action.model_validate({"template": "buy"})
CHURN = Action.model_validate({"template": "churn"})


def test_tiers_are_monotone_in_recency_and_frequency() -> None:
    recent = [fallback_score(BUY, days_since_last=d, count_90d=1).score for d in (1, 10, 60, 200)]
    assert recent == sorted(recent, reverse=True)
    assert fallback_score(BUY, days_since_last=None, count_90d=0).recency_tier == 3
    frequent = [fallback_score(BUY, days_since_last=3, count_90d=n).score for n in (0, 1, 5)]
    assert frequent == sorted(frequent)
    churn = [fallback_score(CHURN, days_since_last=d, count_90d=1).score for d in (1, 10, 60, 200)]
    assert churn == sorted(churn)  # quiet customers are the likely churners


def test_scores_use_only_visible_events_and_are_flagged() -> None:
    con = log([
        ev("a", "purchase", day(-2)),
        ev("a", "purchase", day(-40)),
        ev("a", "purchase", day(-50)),
        ev("b", "purchase", day(-1), available_at=day(1)),  # not yet known at day 0
    ])  # fmt: skip
    spine = pa.table(
        {"customer_id": ["a", "b", "nobody"], "as_of": pa.array([day(0)] * 3, pa.timestamp("us", tz="UTC"))}
    )
    out = fallback_scores(con, BUY, spine).to_pylist()
    assert [r["customer_id"] for r in out] == ["a", "b", "nobody"]
    assert all(r["fallback"] is True and r["action"] == "buy_7d" for r in out)
    assert (out[0]["recency_tier"], out[0]["frequency_tier"]) == (0, 2)
    assert out[1]["score"] == out[2]["score"] == fallback_score(BUY, days_since_last=None, count_90d=0).score
    assert fallback_scores(con, BUY, spine).equals(fallback_scores(con, BUY, spine))
