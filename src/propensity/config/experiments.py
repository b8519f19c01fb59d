"""The ``experiments`` section of propensity.yaml: holdout (control) groups.

>>> ExperimentSettings.model_validate({"holdouts": [{"name": "q4-2026", "control_share": 0.1}]}).holdouts[0].actions
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from propensity.config.base import StrictModel

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Holdout(StrictModel):
    """A control group: ``control_share`` of customers (by a hash of customer and ``name``) are never activated,
    so their outcomes measure what activation adds."""

    name: str = Field(
        description="The experiment's name; also salts the hash that assigns customers to control."
    )
    control_share: float = Field(
        default=0.1, gt=0.0, lt=1.0, description="Share of customers (0 to 1) in the control group."
    )
    # The actions the experiment covers; None means all of them.
    actions: list[str] | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"{value!r}: use letters, digits, '_', '-' or '.', starting with a letter or digit"
            )
        return value


class ExperimentSettings(StrictModel):
    holdouts: list[Holdout] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_experiment_per_action(self) -> ExperimentSettings:
        # A customer-action pair must have one group; two experiments covering one action would make it ambiguous.
        seen: dict[str, str] = {}
        for h in self.holdouts:
            for action in h.actions or ["*"]:
                for other_action, other in seen.items():
                    if "*" in (action, other_action) or action == other_action:
                        raise ValueError(
                            f"holdouts: {h.name!r} and {other!r} both cover action {action if action != '*' else other_action!r}; "
                            "give each action at most one experiment"
                        )
                seen[action] = h.name
        return self

    def holdout_for(self, action: str) -> Holdout | None:
        """The experiment covering ``action``, if any."""
        for h in self.holdouts:
            if h.actions is None or action in h.actions:
                return h
        return None
