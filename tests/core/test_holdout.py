"""Holdout groups: deterministic per customer and experiment, with the configured control share."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from propensity.config.experiments import ExperimentSettings, Holdout
from propensity.core.holdout import CONTROL, TREATMENT, group, groups_for

names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)
shares = st.floats(min_value=0.01, max_value=0.99)


@given(st.text(min_size=1, max_size=40), names, shares)
def test_a_customer_never_changes_group(customer: str, name: str, share: float) -> None:
    first = group(customer, Holdout(name=name, control_share=share))
    # A fresh settings object (another process, another day) gives the same answer.
    again = group(customer, Holdout.model_validate({"name": name, "control_share": share}))
    assert first == again and first in (CONTROL, TREATMENT)


@given(st.text(min_size=1, max_size=40), names, shares, shares)
def test_growing_the_control_share_only_moves_customers_into_control(
    customer: str, name: str, a: float, b: float
) -> None:
    small, large = sorted((a, b))
    if group(customer, Holdout(name=name, control_share=small)) == CONTROL:
        assert group(customer, Holdout(name=name, control_share=large)) == CONTROL


@settings(max_examples=25, deadline=None)
@given(names, shares)
def test_the_control_share_is_within_binomial_error(name: str, share: float) -> None:
    n = 4000
    observed = (
        sum(group(f"cust-{i}", Holdout(name=name, control_share=share)) == CONTROL for i in range(n)) / n
    )
    assert abs(observed - share) <= 4.5 * math.sqrt(share * (1 - share) / n)


def test_experiments_are_independent_of_each_other() -> None:
    ids = [f"c{i}" for i in range(4000)]
    a = [group(c, Holdout(name="exp-a", control_share=0.5)) == CONTROL for c in ids]
    b = [group(c, Holdout(name="exp-b", control_share=0.5)) == CONTROL for c in ids]
    both = sum(x and y for x, y in zip(a, b, strict=True)) / len(ids)
    assert abs(both - 0.25) < 0.03  # independent halves overlap in a quarter


def test_groups_for_covers_only_the_experiment_actions() -> None:
    s = ExperimentSettings.model_validate(
        {"holdouts": [{"name": "q4", "control_share": 0.2, "actions": ["buy_7d"]}]}
    )
    assert groups_for(s.holdout_for("churn_30d"), ["a", "b"]) == [None, None]
    assert set(groups_for(s.holdout_for("buy_7d"), [f"c{i}" for i in range(200)])) == {CONTROL, TREATMENT}
