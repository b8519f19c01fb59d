"""The base of every section model in ``propensity.yaml``: unknown keys are errors, values are immutable."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A spec section: a misspelt key is reported with its path instead of being silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)
