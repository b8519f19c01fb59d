"""Invariants of PSI and KS (hypothesis), and what the reference summaries measure."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from propensity.core.stats import ks_statistic, psi
from propensity.monitoring.reference import compare_feature, summarise

samples = st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=300)


@given(samples)
def test_identical_samples_have_zero_psi_and_ks(values: list[float]) -> None:
    assert abs(psi(values, values)) < 1e-12
    assert ks_statistic(values, values) == 0.0


@given(samples, samples)
def test_psi_is_non_negative_and_ks_a_symmetric_share(a: list[float], b: list[float]) -> None:
    assert psi(a, b) >= 0.0
    ks = ks_statistic(a, b)
    assert 0.0 <= ks <= 1.0
    assert ks == ks_statistic(b, a)


@settings(max_examples=30)
@given(st.floats(0.75, 5.0), st.integers(0, 2**31))
def test_a_shift_of_the_mean_is_seen_by_both(shift: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref, cur = rng.normal(size=3000), rng.normal(shift, 1.0, size=3000)
    assert psi(ref, cur) > 0.25
    assert ks_statistic(ref, cur) > 0.15


def test_summary_rates_and_categorical_shares() -> None:
    values = np.array([0.0, 0.0, 1.0, 2.0, np.nan] * 100)
    ref = summarise("x", values)
    assert ref.kind == "numeric" and abs(ref.null_rate - 0.2) < 1e-12 and abs(ref.zero_rate - 0.5) < 1e-12  # type: ignore[operator]
    cmp = compare_feature(ref, np.array([np.nan] * 400 + [1.0] * 100))
    assert abs(cmp.null_rate - 0.8) < 1e-12 and cmp.zero_rate == 0.0
    cats = summarise("plan", ["basic"] * 300 + ["pro"] * 100 + [None] * 100)
    assert cats.kind == "categorical" and cats.categories == ["basic", "pro"]
    assert compare_feature(cats, ["basic"] * 300 + ["pro"] * 100 + [None] * 100).psi < 1e-12
    assert compare_feature(cats, ["pro"] * 300 + ["basic"] * 100).psi > 0.25
    assert compare_feature(cats, ["enterprise"] * 10).shares[-1] == 1.0  # unseen values go to "(other)"
