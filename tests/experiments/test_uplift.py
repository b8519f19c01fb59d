"""Uplift: the two-model estimator finds the persuadable customers better than random targeting."""

from __future__ import annotations

import numpy as np
import pytest
from tests.experiments.simulation import simulate

from propensity.config.experiments import Holdout
from propensity.experiments.uplift import UpliftDataError, evaluate_uplift, qini_curve


def test_qini_of_a_perfect_ranking_beats_random_and_a_reversed_one_loses() -> None:
    exp = simulate(3000, seed=2, holdout=Holdout(name="sim-qini", control_share=0.5))
    assert qini_curve(exp.true_uplift, exp.treated, exp.outcome).qini > 0
    assert qini_curve(-exp.true_uplift, exp.treated, exp.outcome).qini < 0


def test_uplift_model_qini_beats_random() -> None:
    """Acceptance: the uplift model's Qini beats random targeting (out of fold, beyond chance)."""
    exp = simulate(10000, seed=7, holdout=Holdout(name="sim-uplift", control_share=0.5))
    result, predicted = evaluate_uplift(exp.x, exp.treated, exp.outcome, exp.customer_ids, seed=0)
    assert result.qini > 0
    # Random scores give a Qini around zero; the model must beat every one of 100 random rankings.
    rng = np.random.default_rng(0)
    random_qinis = [qini_curve(rng.random(len(predicted)), exp.treated, exp.outcome).qini for _ in range(100)]
    assert result.qini > max(random_qinis)
    # The top fifth by predicted uplift has a larger realised uplift than the bottom fifth.
    top, bottom = result.by_quintile[0]["realised_uplift"], result.by_quintile[-1]["realised_uplift"]
    assert top is not None and bottom is not None and top > bottom + 0.05
    # And the predictions separate the persuadable customers from the others.
    assert predicted[exp.true_uplift > 0].mean() > predicted[exp.true_uplift == 0].mean() + 0.05


def test_too_little_data_is_refused_with_counts() -> None:
    exp = simulate(150, seed=1, holdout=Holdout(name="tiny", control_share=0.1))
    with pytest.raises(UpliftDataError, match="control rows"):
        evaluate_uplift(exp.x, exp.treated, exp.outcome, exp.customer_ids)


@pytest.mark.slow
def test_permutation_test_finds_a_planted_effect_and_calls_noise_random() -> None:
    """Acceptance: with a planted heterogeneous effect the permutation test finds it; with no effect at all the
    verdict is "indistinguishable from random" in at least 95% of experiments (20 seeds)."""
    from propensity.experiments.uplift import evaluate_predictions

    exp = simulate(4000, seed=11, holdout=Holdout(name="sim-perm", control_share=0.5))
    result, _ = evaluate_uplift(exp.x, exp.treated, exp.outcome, exp.customer_ids, seed=0)
    assert result.test is not None and result.test.p_value < 0.01
    assert result.to_json()["verdict"].startswith("beats random")
    assert result.qini_coefficient is not None and result.qini_coefficient > 0.05
    calls = []
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        n = 1500
        x = rng.standard_normal((n, 2))
        treated = rng.random(n) < 0.5
        y = (rng.random(n) < 1 / (1 + np.exp(1.5 - 0.8 * x[:, 1]))).astype(np.int64)  # no treatment effect
        ids = [f"n{seed}-{i}" for i in range(n)]
        from propensity.experiments.uplift import cross_fitted_uplift

        u = cross_fitted_uplift(x, treated, y, ids, seed=seed, rounds=60)
        verdict = evaluate_predictions(u, treated, y, seed=seed, permutations=200).to_json()["verdict"]
        calls.append(verdict.startswith("indistinguishable from random"))
    assert sum(calls) >= 19, calls
