"""Prometheus exposition of the latest monitor run, and a scheduler that runs the monitors in the background.

:func:`render_gauges` turns a :class:`~propensity.monitoring.store.MonitorRun` into text exposition lines, one
gauge per monitor named for it, labelled by what it watches::

    propensity_feature_psi{feature="spend_30d"} 0.031
    propensity_freshness_silence_hours{source="web"} 0.2
    propensity_monitor_status{monitor="feature_psi",subject="spend_30d"} 0

``propensity_monitor_status`` is 0 (ok), 1 (warning) or 2 (alert), so one alerting rule covers every monitor.
:class:`MonitorScheduler` runs :func:`~propensity.monitoring.runner.run_monitors` every
``monitoring.interval`` on a daemon thread and keeps the latest run for :func:`render_gauges`.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

from propensity.monitoring.monitors import SEVERITY
from propensity.monitoring.store import MonitorRun
from propensity.workspace import Workspace

logger = logging.getLogger("propensity.monitoring")

# monitor name → (metric name, label that names the subject, help text)
METRICS: dict[str, tuple[str, str, str]] = {
    "feature_psi": ("propensity_feature_psi", "feature", "PSI of the feature against its training reference"),
    "feature_ks": (
        "propensity_feature_ks",
        "feature",
        "Two-sample KS statistic against the training reference",
    ),
    "null_rate": (
        "propensity_feature_null_rate_increase",
        "feature",
        "Null share now minus in the reference",
    ),
    "zero_rate": (
        "propensity_feature_zero_rate_increase",
        "feature",
        "Zero share now minus in the reference",
    ),
    "score_psi": ("propensity_score_psi", "action", "PSI of the scores against the bundle's test scores"),
    "freshness_silence": (
        "propensity_freshness_silence_hours",
        "source",
        "Hours since the last available event",
    ),
    "freshness_lag": (
        "propensity_freshness_lag_p95_hours",
        "source",
        "p95 hours from event time to availability",
    ),
    "volume": ("propensity_volume_fold_change", "source", "Last 24h volume vs the trailing median (fold)"),
    "calibration_ece": ("propensity_calibration_ece", "action", "ECE on the latest matured labels"),
    "auc_drop": ("propensity_auc_drop", "action", "Test AUC minus AUC on the latest matured labels"),
    "expected_auc_drop": ("propensity_expected_auc_drop", "action", "Test AUC minus the CBPE-estimated AUC"),
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def render_gauges(run: MonitorRun | None) -> str:
    """The latest run as Prometheus text exposition (version 0.0.4); empty when there is no run yet."""
    if run is None:
        return ""
    lines: list[str] = []
    by_name: dict[str, list[str]] = {}
    for r in run.results:
        metric, label, _ = METRICS.get(r.name, (f"propensity_{r.name}", "subject", r.name))
        by_name.setdefault(r.name, []).append(f'{metric}{{{label}="{_label(r.subject)}"}} {_number(r.value)}')
    for name, samples in sorted(by_name.items()):
        metric, _, help_text = METRICS.get(name, (f"propensity_{name}", "subject", name))
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge", *samples]
    lines += [
        "# HELP propensity_monitor_status 0 ok, 1 warning, 2 alert",
        "# TYPE propensity_monitor_status gauge",
    ]
    lines += [
        f'propensity_monitor_status{{monitor="{_label(r.name)}",subject="{_label(r.subject)}"}} {SEVERITY[r.status]}'
        for r in run.results
    ]
    lines += [
        "# HELP propensity_monitor_last_run_timestamp_seconds When the latest monitor run finished",
        "# TYPE propensity_monitor_last_run_timestamp_seconds gauge",
        f"propensity_monitor_last_run_timestamp_seconds {run.finished_at.timestamp():.3f}",
    ]
    return "\n".join(lines) + "\n"


class MonitorScheduler:
    """Runs the monitors every ``workspace.spec.monitoring.interval`` on a daemon thread.

    ``start()`` runs once immediately, then waits the interval between the end of one run and the start of the
    next; ``stop()`` wakes it and joins. A failing run is logged and retried at the next tick, never raised into
    the server. ``latest`` is the most recent successful run (the stored latest one at start).
    """

    def __init__(
        self,
        workspace: Workspace,
        *,
        interval_s: float | None = None,
        run: Callable[[Workspace], MonitorRun] | None = None,
    ) -> None:
        self.workspace = workspace
        self.interval_s = interval_s if interval_s is not None else workspace.spec.monitoring.interval.seconds
        self._run = run or _default_run
        self._stop = threading.Event()
        self._run_now = True
        self._thread: threading.Thread | None = None
        self.latest: MonitorRun | None = None
        self.runs = 0
        self.failures = 0

    def start(self, *, run_now: bool = True) -> None:
        """Start the thread; ``run_now=False`` waits one interval first (a server that just started should
        not hold the workspace lock for a monitor run while it takes its first requests)."""
        if self._thread is not None:
            return
        self.latest = _stored_latest(self.workspace)
        self._run_now = run_now
        self._thread = threading.Thread(target=self._loop, name="propensity-monitors", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def run_once(self) -> MonitorRun | None:
        """One run now (what the thread does each tick); returns None when it failed."""
        try:
            run = self._run(self.workspace)
        except Exception:
            self.failures += 1
            logger.exception("monitor run failed; retrying in %.0fs", self.interval_s)
            return None
        self.latest = run
        self.runs += 1
        return run

    def gauges(self) -> str:
        return render_gauges(self.latest)

    def _loop(self) -> None:
        if not self._run_now:
            self._stop.wait(self.interval_s)
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval_s)


def render_latest(workspace: Workspace) -> str:
    """The workspace's latest stored run as exposition text (for a process that does not run the scheduler)."""
    return render_gauges(_stored_latest(workspace))


def _default_run(workspace: Workspace) -> MonitorRun:
    from propensity.monitoring.runner import run_monitors

    return run_monitors(workspace)


def _stored_latest(workspace: Workspace) -> MonitorRun | None:
    from propensity.events.log import open_event_log
    from propensity.monitoring.store import load_runs

    if not workspace.db_path.exists():
        return None
    with workspace.write_lock(), open_event_log(workspace).connection() as con:
        runs = load_runs(con, limit=1, order="finished_at")
    return runs[-1] if runs else None
