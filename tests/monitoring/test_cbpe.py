"""CBPE: estimates from calibrated scores alone match what the labels later measure."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from propensity.config.monitoring import AlertSettings
from propensity.monitoring.cbpe import estimate_performance, expected_auc, measured_performance
from propensity.monitoring.monitors import expected_performance_monitor


def _expected_auc_by_pairs(p: np.ndarray) -> float:
    num = den = 0.0
    for i, j in itertools.permutations(range(len(p)), 2):
        w = p[i] * (1 - p[j])
        den += w
        num += w * (1.0 if p[i] > p[j] else 0.5 if p[i] == p[j] else 0.0)
    return num / den


@given(st.lists(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.7, 0.9, 1.0]), min_size=2, max_size=12))
def test_fast_expected_auc_is_the_pairwise_definition(values: list[float]) -> None:
    p = np.array(values)
    fast = expected_auc(p)
    if fast is None:  # no pair with a possible positive and negative
        assert all(v in (0.0, 1.0) for v in values) or len(values) < 2
        return
    assert fast == pytest.approx(_expected_auc_by_pairs(p), abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_estimates_match_measured_figures_on_calibrated_scores(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.beta(1.2, 6.0, size=8000)  # calibrated by construction: the outcome is drawn with probability p
    y = rng.random(len(p)) < p
    threshold = float(np.quantile(p, 0.9))
    est = estimate_performance(p, threshold=threshold)
    got = measured_performance(p, y, threshold=threshold)
    assert est["expected_auc"] == pytest.approx(got["roc_auc"], abs=0.02)
    assert est["expected_precision"] == pytest.approx(got["precision"], abs=0.04)
    assert est["expected_rate"] == pytest.approx(got["rate"], abs=0.01)
    assert est["expected_recall"] == pytest.approx(got["recall"], abs=0.04)


def test_a_miscalibrated_model_is_where_cbpe_stops_being_honest() -> None:
    """Overconfident scores promise a higher precision than the labels deliver: why calibration is monitored."""
    rng = np.random.default_rng(7)
    true_p = rng.beta(1.2, 6.0, size=8000)
    y = rng.random(len(true_p)) < true_p
    inflated = np.clip(true_p * 2.0, 0, 1)
    threshold = float(np.quantile(inflated, 0.9))
    est = estimate_performance(inflated, threshold=threshold)
    got = measured_performance(inflated, y, threshold=threshold)
    assert est["expected_precision"] - got["precision"] > 0.15


def test_expected_auc_drop_fires_when_todays_scores_stop_separating() -> None:
    """Before any label exists: a model whose scores collapse towards the base rate can no longer rank."""
    rng = np.random.default_rng(11)
    alerts = AlertSettings()
    healthy = rng.beta(1.2, 6.0, size=5000)
    collapsed = np.clip(rng.normal(0.15, 0.01, size=5000), 0, 1)
    test_auc = expected_auc(healthy)
    ok = expected_performance_monitor("buy_7d", estimate_performance(healthy, threshold=0.3), test_auc=test_auc,
                                      alerts=alerts, min_rows=50)  # fmt: skip
    bad = expected_performance_monitor("buy_7d", estimate_performance(collapsed, threshold=0.3), test_auc=test_auc,
                                       alerts=alerts, min_rows=50)  # fmt: skip
    assert ok is not None and ok.status == "ok"
    assert bad is not None and bad.status == "alert" and bad.details["expected_auc"] < 0.6
    few = expected_performance_monitor("buy_7d", estimate_performance(collapsed[:20], threshold=0.3),
                                       test_auc=test_auc, alerts=alerts, min_rows=50)  # fmt: skip
    assert few is not None and few.status == "ok"  # too few rows to act on
