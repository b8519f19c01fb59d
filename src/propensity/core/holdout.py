"""Holdout assignment: which customers are the control group of an experiment.

A customer is in the control group of experiment ``name`` when ``stable_fraction(customer_id, name)`` is below
the experiment's ``control_share``; otherwise in treatment. Deterministic across runs, processes and machines,
so a customer never flips group while the experiment runs.

>>> from propensity.config.experiments import Holdout
>>> group("c1", Holdout(name="q4", control_share=0.1)) in ("control", "treatment")
True
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from propensity.core.hashing import in_share

CONTROL = "control"
TREATMENT = "treatment"


class HoldoutRule(Protocol):
    """What assignment needs of an experiment's holdout (``config.experiments.Holdout`` is one)."""

    @property
    def name(self) -> str: ...

    @property
    def control_share(self) -> float: ...


def group(customer_id: str, holdout: HoldoutRule) -> str:
    return CONTROL if in_share(customer_id, holdout.name, holdout.control_share) else TREATMENT


def groups_for(holdout: HoldoutRule | None, customer_ids: Iterable[str]) -> list[str | None]:
    """Each customer's group under ``holdout`` (None for all when no experiment covers the action; pass
    ``ExperimentSettings.holdout_for(action)``)."""
    if holdout is None:
        return [None for _ in customer_ids]
    return [group(c, holdout) for c in customer_ids]
