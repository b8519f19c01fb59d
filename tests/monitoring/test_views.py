"""The console's view helpers that need no workspace: alert ranking and champion vs challengers."""

from __future__ import annotations

from datetime import UTC, datetime

from propensity.monitoring.monitors import MonitorResult
from propensity.monitoring.store import MonitorRun
from propensity.monitoring.views import _candidates, rank_alerts


def test_alerts_rank_by_status_then_how_far_past_the_threshold() -> None:
    t = datetime(2025, 1, 1, tzinfo=UTC)
    results = [
        MonitorResult("feature_psi", "a", 0.12, 0.1, 0.25, "warning"),
        MonitorResult("volume", "web", 9.0, 2.0, 4.0, "alert"),
        MonitorResult("feature_psi", "b", 0.5, 0.1, 0.25, "alert"),
        MonitorResult("feature_psi", "c", 0.01, 0.1, 0.25, "ok"),
        MonitorResult("freshness_silence", "crm", float("inf"), 6.0, 24.0, "alert"),
    ]
    # An endless silence first; then 9 / 4 = 2.25 times the alert threshold before 0.5 / 0.25 = 2; warnings last.
    ranked = rank_alerts(MonitorRun("r", t, t, t, None, results))
    assert [(a["monitor"], a["subject"]) for a in ranked] == [
        ("freshness_silence", "crm"), ("volume", "web"), ("feature_psi", "b"), ("feature_psi", "a")]  # fmt: skip
    assert rank_alerts(None) == []


def test_candidates_champion_first_or_model_and_baseline() -> None:
    info = {"candidates": [
        {"candidate": "linear", "kind": "linear", "champion": False, "calibration": "platt",
         "calibration_log_loss": 0.31, "calibration_split": {"roc_auc": 0.80, "ece": 0.01}},
        {"candidate": "blend", "kind": "blend", "champion": True, "calibration": "isotonic",
         "calibration_log_loss": 0.30, "calibration_split": {"roc_auc": 0.81, "ece": 0.008}},
    ]}  # fmt: skip
    rows = _candidates(info)
    assert [(r["name"], r["champion"]) for r in rows] == [("blend", True), ("linear", False)]
    assert rows[0]["roc_auc"] == 0.81 and rows[0]["where"].startswith("calibration split")
    older = {"metrics": {"model": {"roc_auc": 0.9, "ece": 0.01, "log_loss": 0.2},
                         "baseline": {"roc_auc": 0.88, "ece": 0.02, "log_loss": 0.22}}}  # fmt: skip
    assert [(r["name"], r["champion"]) for r in _candidates(older)] == [
        ("lightgbm", True),
        ("logistic baseline", False),
    ]
