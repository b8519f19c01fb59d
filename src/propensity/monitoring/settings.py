"""The ``monitoring`` and ``alerts`` sections of propensity.yaml."""

from __future__ import annotations

from propensity.config.base import StrictModel


class MonitoringSettings(StrictModel):
    """(Filled in by its stage.)"""


class AlertSettings(StrictModel):
    """(Filled in by its stage.)"""
