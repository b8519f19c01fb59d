"""`propensity monitor`: run the monitors, store results, write the monitoring report."""

from __future__ import annotations

from propensity.cli.app import app  # noqa: F401
