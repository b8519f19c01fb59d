"""The console's view helpers that need no workspace: alert ranking and champion vs challengers."""

from __future__ import annotations

from datetime import UTC, datetime

from propensity.monitoring.monitors import MonitorResult
from propensity.monitoring.store import MonitorRun
from propensity.monitoring.views import _candidates, model_choice, rank_alerts


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
    # As `propensity monitor` ranks them: a data failure first, the drift it explains after the rest.
    calibration = MonitorResult("calibration_ece", "buy_7d", 0.11, 0.05, 0.1, "alert")
    ranked = rank_alerts(MonitorRun("r", t, t, t, None, [*results, calibration]))
    assert [(a["monitor"], a["subject"], a["explained_by"]) for a in ranked] == [
        ("freshness_silence", "crm", None), ("volume", "web", None), ("calibration_ece", "buy_7d", None),
        ("feature_psi", "b", "freshness_silence:crm"), ("feature_psi", "a", "freshness_silence:crm")]  # fmt: skip


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


def test_model_choice_says_why_the_champion_won() -> None:
    """A bundle from the evaluate-then-refit procedure: served kind, candidates, the reason, the logistic
    reference, backtest folds (one skipped) and warnings; an older bundle gives none of them but still works."""
    info = {
        "model": {"kind": "blend", "trees": 120, "weights": {"linear": 0.3, "lightgbm": 0.7}},
        "candidates": [
            {"candidate": "lightgbm", "kind": "lightgbm", "champion": False, "calibration": "isotonic",
             "calibration_log_loss": 0.305, "calibration_split": {"roc_auc": 0.80, "ece": 0.01}},
            {"candidate": "blend", "kind": "blend", "champion": True, "calibration": "platt",
             "calibration_log_loss": 0.300, "calibration_split": {"roc_auc": 0.81, "ece": 0.008}},
        ],
        "champion": {"candidate": "blend", "kind": "blend", "why": "blend: lowest calibrated log loss",
                     "baseline_calibration_log_loss": 0.33},
        "stages": {"champion": {"how": "time: training → calibration split"}},
        "backtest": {"procedure": "refit on every matured row", "folds": [
            {"origin": None, "skipped": "history too short for this fold"},
            {"origin": "2025-05-01T00:00:00", "test_split": True, "calibration": "platt",
             "evaluated": {"rows": 500, "positives": 60}, "model": {"roc_auc": 0.8, "log_loss": 0.3, "ece": 0.01},
             "baseline": {"roc_auc": 0.75, "log_loss": 0.33}},
        ]},
        "warnings": ["buy_7d: 12 rows purged"],
    }  # fmt: skip
    c = model_choice(info)
    assert (c["kind"], c["champion"], c["why"]) == ("blend", "blend", "blend: lowest calibrated log loss")
    assert [r["name"] for r in c["candidates"]] == ["blend", "lightgbm"]
    assert c["candidates"][0]["where"] == "calibration split (time: training → calibration split)"
    assert c["reference"] is not None and c["reference"]["log_loss"] == 0.33
    assert c["backtest"][0]["skipped"] and c["backtest"][1]["roc_auc"] == 0.8
    assert c["backtest"][1]["baseline_log_loss"] == 0.33 and c["backtest"][1]["rows"] == 500
    assert c["warnings"] == ["buy_7d: 12 rows purged"]
    old = model_choice({"metrics": {"model": {"roc_auc": 0.9}, "baseline": {"roc_auc": 0.88}}})
    assert old["kind"] == "lightgbm" and old["why"] is None and old["reference"] is None
    assert old["backtest"] == [] and [r["name"] for r in old["candidates"]] == [
        "lightgbm",
        "logistic baseline",
    ]
