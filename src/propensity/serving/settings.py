"""The ``serving`` section of propensity.yaml (online store backend, canary)."""

from __future__ import annotations

from propensity.config.base import StrictModel


class ServingSettings(StrictModel):
    """(Filled in by its stage.)"""
