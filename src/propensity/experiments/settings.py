"""The ``experiments`` section of propensity.yaml."""

from __future__ import annotations

from propensity.config.base import StrictModel


class ExperimentSettings(StrictModel):
    """(Filled in by its stage.)"""
