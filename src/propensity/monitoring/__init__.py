"""Monitoring: drift, freshness, volume and calibration monitors, alerts, and the monitoring report.

``run_monitors(workspace)`` runs every monitor and stores the run; ``render_gauges(run)`` exposes it to
Prometheus; ``MonitorScheduler`` runs the monitors in the background of a server; ``write_report`` writes the
HTML/JSON report from stored runs. See docs/monitoring.md.

The names are imported on first use: the project spec imports :mod:`propensity.monitoring.settings`, and an
eager import here would import the workspace, which imports the spec.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "MonitorResult": "monitors",
    "MonitorRun": "store",
    "MonitorScheduler": "gauges",
    "load_runs": "store",
    "render_gauges": "gauges",
    "run_monitors": "runner",
    "write_report": "report",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"propensity.monitoring.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'propensity.monitoring' has no attribute {name!r}")
