"""Firing monitors grouped and ranked: the data's own failures first, with the drift they cause under them.

When a source goes silent (``freshness_silence``), arrives late (``freshness_lag``) or changes volume
(``volume``), features computed as of now drift because the data stopped, not because customers changed: every
recency feature ages, every window count drains, and the scores follow. Reporting those drift results as
separate alerts buries the one cause among dozens of effects. :func:`rank` puts each firing data failure first
and groups the firing drift results (features, scores, estimated performance) under the worst of them, so the
report reads "fix the data first"; model-quality results on matured labels (calibration, AUC) stand on their
own, as do drift results when the data is healthy.

>>> from propensity.monitoring.monitors import MonitorResult
>>> silence = MonitorResult("freshness_silence", "web", 240.0, 6.0, 24.0, "alert")
>>> psi = MonitorResult("feature_psi", "visits_7d", 0.9, 0.1, 0.25, "alert")
>>> ece = MonitorResult("calibration_ece", "buy_7d", 0.2, 0.05, 0.1, "alert")
>>> [(g.lead.key, [r.key for r in g.explained]) for g in rank([psi, ece, silence])]
[('freshness_silence:web', ['feature_psi:visits_7d']), ('calibration_ece:buy_7d', [])]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from propensity.monitoring.monitors import SEVERITY, MonitorResult

# Failures of the data itself, most telling first: silence explains volume, volume explains lag.
DATA_FAILURES: tuple[str, ...] = ("freshness_silence", "volume", "freshness_lag")
# What a data failure makes drift: computed from features as of now, so they follow the data.
CONSEQUENCES: tuple[str, ...] = (
    "feature_psi", "feature_ks", "null_rate", "zero_rate", "score_psi", "expected_auc_drop",
)  # fmt: skip
# Standalone results, most actionable first.
_ORDER: dict[str, int] = {
    name: i for i, name in enumerate((*DATA_FAILURES, "calibration_ece", "auc_drop", "score_psi",
                                      "expected_auc_drop", "feature_psi", "feature_ks", "null_rate", "zero_rate"))
}  # fmt: skip


@dataclass
class AlertGroup:
    """One firing result (``lead``) and the firing results it explains."""

    lead: MonitorResult
    explained: list[MonitorResult] = field(default_factory=list)

    @property
    def cause(self) -> bool:
        """The lead is a failure of the data (freshness or volume)."""
        return self.lead.name in DATA_FAILURES

    def headline(self) -> str:
        """One line: what fired and, for a data failure, what it explains."""
        r = self.lead
        what = _what(r)
        if self.explained:
            what += (
                f"; explains {len(self.explained)} drift result(s) listed under it (features as of now see the "
                "gap in the data, not a change in customers): fix the data first"
            )
        return what

    def to_json(self) -> dict[str, Any]:
        return {
            "lead": self.lead.key,
            "status": self.lead.status,
            "cause": self.cause,
            "headline": self.headline(),
            "explains": [r.key for r in self.explained],
        }


def _what(r: MonitorResult) -> str:
    v = r.value
    if r.name == "freshness_silence":
        hours = "no event ever" if v == float("inf") else f"no event for {v:.0f} h"
        return f"source {r.subject}: {hours} (alert above {r.alert:g} h)"
    if r.name == "volume":
        d = r.details
        return (
            f"source {r.subject}: last 24 h volume {d.get('last_day', '?')} against a trailing median of "
            f"{d.get('trailing_median', float('nan')):.0f} ({d.get('direction', 'change')}, x{v:.1f})"
        )
    if r.name == "freshness_lag":
        return f"source {r.subject}: events arrive {v:.1f} h after they happen (p95)"
    return f"{r.name} on {r.subject}: {v:.4g} (warning above {r.warning:g}, alert above {r.alert:g})"


def _key(r: MonitorResult) -> tuple[int, int, str]:
    return (-SEVERITY[r.status], _ORDER.get(r.name, len(_ORDER)), r.subject)


def rank(results: Sequence[MonitorResult]) -> list[AlertGroup]:
    """The firing results (warning or alert) as ranked groups: data failures first (each by severity), the
    firing drift results grouped under the worst data failure, then every other firing result by severity."""
    firing = [r for r in results if r.status != "ok"]
    causes = sorted((r for r in firing if r.name in DATA_FAILURES),
                    key=lambda r: (-SEVERITY[r.status], DATA_FAILURES.index(r.name), r.subject))  # fmt: skip
    groups = [AlertGroup(c) for c in causes]
    rest = [r for r in firing if r.name not in DATA_FAILURES]
    if groups:
        explained = [r for r in rest if r.name in CONSEQUENCES]
        groups[0].explained = sorted(explained, key=_key)
        rest = [r for r in rest if r.name not in CONSEQUENCES]
    return groups + [AlertGroup(r) for r in sorted(rest, key=_key)]


def explained_by(results: Sequence[MonitorResult]) -> dict[str, str]:
    """``monitor:subject`` of each explained result → the key of the data failure that explains it."""
    return {r.key: g.lead.key for g in rank(results) for r in g.explained}
