"""The ``segments`` and ``policies`` sections of propensity.yaml."""

from __future__ import annotations

from propensity.config.base import StrictModel


class SegmentSettings(StrictModel):
    """(Filled in by its stage.)"""


class PolicySettings(StrictModel):
    """(Filled in by its stage.)"""
