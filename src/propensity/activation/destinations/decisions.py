"""A customer's decision: their rows of one run folded into one record (what webhooks and profiles carry).

The *fingerprint* of a decision covers what a backend acts on (next best action, and per action: eligibility
and segment), not the raw score, so a customer whose score moves within the same segment is not "changed".
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pyarrow as pa

from propensity.core.hashing import content_hash


def decisions(rows: pa.Table) -> Iterator[dict[str, Any]]:
    """One decision per customer, in the order customers first appear in ``rows``."""
    by_customer: dict[str, dict[str, Any]] = {}
    columns = rows.to_pydict()
    for i, cid in enumerate(columns["customer_id"]):
        d = by_customer.get(cid)
        if d is None:
            d = by_customer[cid] = {
                "customer_id": cid,
                "scoring_run_id": columns["scoring_run_id"][i],
                "next_best_action": columns["next_best_action"][i],
                "decision_policy": columns["decision_policy"][i],
                "holdout_group": columns["holdout_group"][i],
                "model_version": columns["model_version"][i],
                "scored_at": _iso(columns["scored_at"][i]),
                "expiration_at": _iso(columns["expiration_at"][i]),
                "scores": {},
            }
        d["scores"][columns["action"][i]] = {
            "score": columns["score"][i],
            "percentile": columns["percentile"][i],
            "segment": columns["segment"][i],
            "eligible": columns["eligible"][i],
        }
        # The earliest expiry of the customer's rows bounds the whole decision.
        d["expiration_at"] = min(d["expiration_at"], _iso(columns["expiration_at"][i]))
    yield from by_customer.values()


def fingerprint(decision: dict[str, Any]) -> str:
    key = {
        "nba": decision.get("next_best_action"),
        "actions": {
            a: [s.get("eligible"), s.get("segment")] for a, s in sorted(decision.get("scores", {}).items())
        },
    }
    return content_hash(key, 32, spaced=True)


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")
