"""The ``scoring`` section of propensity.yaml (batch scoring and the score store)."""

from __future__ import annotations

from propensity.config.base import StrictModel


class ScoringSettings(StrictModel):
    """(Filled in by its stage.)"""
