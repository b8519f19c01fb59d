"""Lift with confidence intervals: reference values, and the planted truth inside the interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from tests.experiments.simulation import (
    TRUE_ABSOLUTE_LIFT,
    TRUE_RELATIVE_LIFT,
    TRUE_SEGMENT_LIFT,
    simulate,
)

from propensity.config.experiments import Holdout
from propensity.experiments.lift import ALL_SEGMENTS, lift, lift_by_segment, lift_of, wilson


def test_wilson_matches_the_textbook_value() -> None:
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 → 0.2553 to 0.3662.
    lo, hi = wilson(81, 263)
    assert lo == pytest.approx(0.2553, abs=1e-4) and hi == pytest.approx(0.3662, abs=1e-4)


def test_absolute_lift_interval_matches_newcombe_method_10() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, table II example (a): 56/70 vs 48/80 → 0.0524 to 0.3339.
    r = lift(x_t=56, n_t=70, x_c=48, n_c=80)
    assert r.absolute == pytest.approx(0.2)
    assert r.absolute_ci is not None
    assert r.absolute_ci[0] == pytest.approx(0.0524, abs=1e-4)
    assert r.absolute_ci[1] == pytest.approx(0.3339, abs=1e-4)


def test_relative_lift_is_the_rate_ratio_minus_one_with_a_log_interval() -> None:
    r = lift(x_t=150, n_t=1000, x_c=100, n_c=1000)
    assert r.relative == pytest.approx(0.5)
    se = math.sqrt(1 / 150 - 1 / 1000 + 1 / 100 - 1 / 1000)
    assert r.relative_ci == pytest.approx(
        (1.5 * math.exp(-1.959964 * se) - 1, 1.5 * math.exp(1.959964 * se) - 1)
    )


def test_empty_groups_and_zero_cells_do_not_crash() -> None:
    assert lift(x_t=3, n_t=10, x_c=0, n_c=0).absolute is None
    zero = lift(x_t=5, n_t=50, x_c=0, n_c=50)
    assert zero.relative_ci is not None and all(math.isfinite(v) for v in zero.relative_ci)
    assert lift(x_t=0, n_t=50, x_c=0, n_c=50).relative is None


@given(
    st.integers(1, 400).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))),
    st.integers(1, 400).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))),
)
@example((3, 0), (400, 400))  # the Newcombe lower bound rounded to -1.0000000000000002 before it was clamped
def test_the_interval_contains_the_estimate_and_stays_in_range(
    t: tuple[int, int], c: tuple[int, int]
) -> None:
    r = lift(x_t=t[1], n_t=t[0], x_c=c[1], n_c=c[0])
    assert r.absolute is not None and r.absolute_ci is not None
    assert -1 <= r.absolute_ci[0] <= r.absolute + 1e-12 <= r.absolute_ci[1] + 2e-12 <= 1 + 2e-12
    if r.relative_ci is not None and t[1] and c[1]:
        assert r.relative_ci[0] <= r.relative + 1e-9 <= r.relative_ci[1] + 2e-9


def test_measured_lift_interval_contains_the_planted_truth() -> None:
    """Acceptance: on data with a planted treatment effect, the 95% interval contains the truth."""
    exp = simulate(6000, seed=11, holdout=Holdout(name="sim-q4", control_share=0.3))
    lifts = lift_by_segment(exp.groups, exp.outcome, exp.segments)
    overall = lifts[ALL_SEGMENTS]
    assert overall.absolute_ci is not None and overall.relative_ci is not None
    assert overall.absolute_ci[0] <= TRUE_ABSOLUTE_LIFT <= overall.absolute_ci[1]
    assert overall.relative_ci[0] <= TRUE_RELATIVE_LIFT <= overall.relative_ci[1]
    assert overall.significant  # the effect is large enough to be found at this size
    for segment, truth in TRUE_SEGMENT_LIFT.items():
        ci = lifts[segment].absolute_ci
        assert ci is not None and ci[0] <= truth <= ci[1], segment
    assert lifts["persuadable"].significant and not lifts["other"].significant


def test_intervals_cover_the_truth_about_95_percent_of_the_time() -> None:
    """Over many simulated experiments the 95% intervals contain the truth in about 95% of them."""
    holdout = Holdout(name="sim-coverage", control_share=0.4)
    reps, hits_abs, hits_rel = 300, 0, 0
    for rep in range(reps):
        exp = simulate(500, seed=1000 + rep, holdout=holdout)
        r = lift_of(exp.groups, exp.outcome)
        assert r.absolute_ci is not None and r.relative_ci is not None
        hits_abs += r.absolute_ci[0] <= TRUE_ABSOLUTE_LIFT <= r.absolute_ci[1]
        hits_rel += r.relative_ci[0] <= TRUE_RELATIVE_LIFT <= r.relative_ci[1]
    # Binomial sd of the coverage over 300 runs is ~1.3 points; the bounds are ~3.5 sd from 95%.
    assert 0.905 <= hits_abs / reps <= 0.99, hits_abs / reps
    assert 0.905 <= hits_rel / reps <= 0.99, hits_rel / reps


def test_no_effect_gives_an_interval_around_zero() -> None:
    rng = np.random.default_rng(3)
    groups = ["treatment"] * 3000 + ["control"] * 3000
    y = (rng.random(6000) < 0.2).astype(int)
    r = lift_of(groups, y)
    assert r.absolute_ci is not None and r.absolute_ci[0] < 0 < r.absolute_ci[1]
