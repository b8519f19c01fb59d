"""The monitors: each compares one measurement with its thresholds and returns a :class:`MonitorResult`.

Monitors are plain functions of numbers already gathered (by :mod:`propensity.monitoring.runner`), so each can be
tested on arrays. Every value is "higher is worse"; :func:`classify` turns it into ``ok``, ``warning`` or
``alert`` with the thresholds from :class:`~propensity.config.monitoring.AlertSettings`.

>>> from propensity.config.monitoring import AlertSettings
>>> r = volume_monitor("web", last_day=40, trailing=[100, 98, 103, 101], alerts=AlertSettings())
>>> r.status, round(r.value, 2)
('warning', 2.48)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from propensity.config.monitoring import AlertSettings, Threshold
from propensity.core.stats import bin_shares, psi_from_shares, quantile_edges
from propensity.monitoring.reference import FeatureSummary, compare_feature

Status = Literal["ok", "warning", "alert"]
SEVERITY: dict[str, int] = {"ok": 0, "warning": 1, "alert": 2}
SCORE_DIGITS = 6


@dataclass(frozen=True)
class MonitorResult:
    """One monitor on one subject (a feature, an action or a source): its value, thresholds and status."""

    name: str
    subject: str
    value: float
    warning: float
    alert: float
    status: Status
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name}:{self.subject}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "subject": self.subject,
            "value": finite_or_none(self.value),
            "warning": self.warning,
            "alert": self.alert,
            "status": self.status,
            "details": self.details,
        }


def finite_or_none(v: float | None) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def classify(value: float, threshold: Threshold) -> Status:
    """``alert`` above the alert threshold, ``warning`` above the warning one; NaN (unmeasurable) is ``ok``."""
    if math.isnan(value):
        return "ok"
    if value > threshold.alert:
        return "alert"
    if value > threshold.warning:
        return "warning"
    return "ok"


def _result(
    name: str,
    subject: str,
    value: float,
    alerts: AlertSettings,
    details: dict[str, Any],
    *,
    floor: float = 0.0,
    quiet: bool = False,
) -> MonitorResult:
    """``floor`` raises both thresholds to at least that (sampling noise); ``quiet`` reports but never fires."""
    t = alerts.threshold(name, subject)
    if floor > t.warning:
        t = Threshold(warning=floor, alert=max(t.alert, floor))
    status: Status = "ok" if quiet else classify(value, t)
    return MonitorResult(name, subject, float(value), t.warning, t.alert, status, details)


# ------------------------------------------------------------------------------------------- features
def ks_noise_floor(n: int, m: int) -> float:
    """The KS statistic two samples of sizes n and m from one distribution exceed with probability 0.001."""
    if n == 0 or m == 0:
        return 1.0
    return 1.95 * math.sqrt((n + m) / (n * m))


def psi_noise_floor(n: int, m: int | None, bins: int) -> float:
    """The PSI that samples of sizes n and m (None: the reference is a known distribution) drawn from one
    distribution exceed with probability 0.001: PSI is about (1/n + 1/m) × χ²(bins − 1) under no change
    (χ² quantile by the Wilson–Hilferty approximation). A 10-bin PSI of 48 values against a reference of 200 is
    noise up to about 0.72; of 20,000 against 80,000, up to about 0.002."""
    if n <= 0:
        return math.inf
    k = max(bins - 1, 1)
    z = 3.090232  # the standard normal's 0.999 quantile
    chi2 = k * (1.0 - 2.0 / (9.0 * k) + z * math.sqrt(2.0 / (9.0 * k))) ** 3
    return (1.0 / n + (1.0 / m if m else 0.0)) * chi2


def feature_monitors(
    summary: FeatureSummary, current: Sequence[Any], alerts: AlertSettings
) -> list[MonitorResult]:
    """PSI (every feature), KS (continuous ones), null-rate and zero-rate increases against the reference."""
    cmp = compare_feature(summary, current)
    name = summary.name
    out = []
    shares: dict[str, Any] = {
        "reference_shares": summary.shares,
        "current_shares": cmp.shares,
        "edges": summary.edges,
    }
    if summary.kind == "categorical":
        shares["categories"] = summary.categories
    if cmp.measured:
        bins = max(len(summary.shares), 2)
        reference_n = round(summary.n * (1.0 - summary.null_rate))
        floor = psi_noise_floor(cmp.n_finite, reference_n, bins)
        out.append(
            _result("feature_psi", name, cmp.psi, alerts,
                    {"n": cmp.n, "kind": summary.kind, "noise_floor": floor, **shares}, floor=floor)
        )  # fmt: skip
        if cmp.ks is not None:
            floor = ks_noise_floor(len(summary.sample), cmp.n_finite)
            out.append(
                _result("feature_ks", name, cmp.ks, alerts, {"n": cmp.n, "noise_floor": floor}, floor=floor)
            )
    null_details = {"reference": summary.null_rate, "current": cmp.null_rate, "n": cmp.n}
    out.append(_result("null_rate", name, cmp.null_rate - summary.null_rate, alerts, null_details))
    if summary.zero_rate is not None and cmp.zero_rate is not None:
        zero_details = {"reference": summary.zero_rate, "current": cmp.zero_rate, "n": cmp.n}
        out.append(_result("zero_rate", name, cmp.zero_rate - summary.zero_rate, alerts, zero_details))
    return out


# ------------------------------------------------------------------------------------------- scores
def sample_from_quantiles(quantiles: Sequence[float], size: int = 10_001) -> np.ndarray:
    """A pseudo-sample with the given quantile function (evenly spaced levels 0 … 1).

    The bundle stores its calibrated test scores as 101 quantiles; reading the quantile function at many levels
    rebuilds a sample with that distribution, ties (flat steps of an isotonic calibrator) included.
    """
    q = np.asarray(quantiles, dtype=np.float64)
    return np.interp(np.linspace(0.0, 1.0, size), np.linspace(0.0, 1.0, len(q)), q)


def score_drift_monitor(
    action: str,
    reference_quantiles: Sequence[float],
    scores: np.ndarray,
    alerts: AlertSettings,
    *,
    bins: int,
    source: str,
) -> MonitorResult:
    """PSI of an action's current scores against the bundle's calibrated test-score distribution."""
    # Calibrators produce steps, so many scores sit exactly on a bin edge; scorers that agree to 1e-9 but not
    # to the last bit (compiled vs. LightGBM) would otherwise put them in different bins. Round both first.
    reference = np.round(sample_from_quantiles(reference_quantiles), SCORE_DIGITS)
    scores = np.round(np.asarray(scores, dtype=np.float64), SCORE_DIGITS)
    edges = quantile_edges(reference, bins)
    value = (
        psi_from_shares(bin_shares(reference, edges), bin_shares(scores, edges)) if len(scores) else math.nan
    )
    hist_edges = np.linspace(0.0, 1.0, 21)
    floor = psi_noise_floor(len(scores), None, bins)
    details = {
        "n": len(scores),
        "noise_floor": floor,
        "source": source,
        "mean_score": float(np.mean(scores)) if len(scores) else None,
        "reference_mean": float(np.mean(reference)),
        "histogram_edges": hist_edges.tolist(),
        "histogram_now": _shares(scores, hist_edges),
        "histogram_reference": _shares(reference, hist_edges),
    }
    return _result("score_psi", action, value, alerts, details, floor=floor)


def _shares(values: np.ndarray, edges: np.ndarray) -> list[float]:
    counts = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)[0]
    return (counts / max(len(values), 1)).tolist()


# ------------------------------------------------------------------------------------------- sources
def freshness_monitors(
    source: str,
    *,
    silence_hours: float,
    lag_p95_hours: float | None,
    events_last_day: int,
    alerts: AlertSettings,
) -> list[MonitorResult]:
    """Hours since the source's last available event, and the p95 delay between event time and availability."""
    out = [_result("freshness_silence", source, silence_hours, alerts, {"events_last_day": events_last_day})]
    if lag_p95_hours is not None:
        out.append(
            _result("freshness_lag", source, lag_p95_hours, alerts, {"events_last_day": events_last_day})
        )
    return out


def volume_monitor(
    source: str, *, last_day: int, trailing: Sequence[int], alerts: AlertSettings
) -> MonitorResult:
    """Fold change of the last 24 hours' volume against the trailing windows' median (≥ 1; 2 = half or double).

    Counts get +1 so that a silent source gives a large finite fold rather than infinity.
    """
    median = float(np.median(trailing)) if len(trailing) else float("nan")
    ratio = (last_day + 1.0) / (median + 1.0)
    fold = max(ratio, 1.0 / ratio) if math.isfinite(ratio) else float("nan")
    details = {
        "last_day": last_day,
        "trailing_median": median,
        "direction": "drop" if ratio < 1 else "rise",
        "trailing": list(trailing),
    }
    return _result("volume", source, fold, alerts, details)


# ------------------------------------------------------------------------------------------- model quality
def calibration_monitors(
    action: str,
    periods: list[dict[str, Any]],
    *,
    test_auc: float | None,
    alerts: AlertSettings,
    min_rows: int,
) -> list[MonitorResult]:
    """ECE and the AUC drop on the latest matured period (with the history in ``details``).

    A period with fewer than ``min_rows`` labelled rows, or a single class, is reported but never fires.
    """
    if not periods:
        return []
    latest = periods[-1]
    quiet = latest["n"] < min_rows or latest["roc_auc"] is None
    history = {"periods": periods}
    out = [_result("calibration_ece", action, latest["ece"], alerts, history, quiet=quiet)]
    if test_auc is not None and latest["roc_auc"] is not None:
        drop = test_auc - latest["roc_auc"]
        # The per-period history is in calibration_ece's details; this one names its period only.
        details = {
            "test_auc": test_auc,
            "roc_auc": latest["roc_auc"],
            "period": latest["as_of"],
            "n": latest["n"],
        }
        out.append(_result("auc_drop", action, drop, alerts, details, quiet=quiet))
    return out


def expected_performance_monitor(
    action: str, estimate: dict[str, Any], *, test_auc: float | None, alerts: AlertSettings, min_rows: int
) -> MonitorResult | None:
    """The drop of the CBPE-estimated AUC (scores alone) below the bundle's test AUC."""
    if test_auc is None or estimate.get("expected_auc") is None:
        return None
    drop = test_auc - estimate["expected_auc"]
    quiet = estimate["n"] < min_rows
    return _result("expected_auc_drop", action, drop, alerts, {"test_auc": test_auc, **estimate}, quiet=quiet)


def worst(results: Sequence[MonitorResult]) -> Status:
    """The most severe status among ``results`` (``ok`` when empty)."""
    level = max((SEVERITY[r.status] for r in results), default=0)
    return ("ok", "warning", "alert")[level]
