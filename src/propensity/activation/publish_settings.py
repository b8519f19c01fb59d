"""The ``destinations`` and ``gates`` sections of propensity.yaml."""

from __future__ import annotations

from propensity.config.base import StrictModel


class DestinationSpec(StrictModel):
    """(Filled in by its stage.)"""


class GateSettings(StrictModel):
    """(Filled in by its stage.)"""
