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
