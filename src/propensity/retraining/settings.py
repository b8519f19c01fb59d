"""The ``retraining`` section of propensity.yaml."""

from __future__ import annotations

from propensity.config.base import StrictModel


class RetrainSettings(StrictModel):
    """(Filled in by its stage.)"""
