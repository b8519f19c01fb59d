"""Feature definitions as declared in ``propensity.yaml`` (placeholder until the feature engine lands)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from propensity.config.durations import WindowDuration


class FeatureDefinition(BaseModel):
    """One feature: an aggregate over a window of one customer's events."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    aggregate: str = "count"
    event_type: str | None = None
    window: WindowDuration
