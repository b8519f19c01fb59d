"""Alerts: the monitor results at or above ``alerts.min_status``, sent to the configured sinks.

An :class:`Alert` is a plain record of one firing monitor with an idempotency key (``run id:monitor:subject``),
so a sink that retries never delivers one alert twice. Sinks honour :class:`AlertSink`; the log sink writes to
the ``propensity.alerts`` logger, the webhook sink hands alerts to the activation delivery outbox (durable,
retried with backoff, dead-lettered), the same guarantees as the activation webhook.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from propensity.monitoring.monitors import SEVERITY, MonitorResult, finite_or_none
from propensity.monitoring.settings import AlertSettings, WebhookSink
from propensity.monitoring.store import MonitorRun
from propensity.workspace import Workspace

logger = logging.getLogger("propensity.alerts")


@dataclass(frozen=True)
class Alert:
    """One firing monitor of one run."""

    run_id: str
    as_of: str
    monitor: str
    subject: str
    status: str
    value: float | None
    warning: float
    alert: float
    message: str

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.monitor}:{self.subject}"

    def to_json(self) -> dict[str, Any]:
        return {
            "idempotency_key": self.idempotency_key,
            "run_id": self.run_id,
            "as_of": self.as_of,
            "monitor": self.monitor,
            "subject": self.subject,
            "status": self.status,
            "value": self.value,
            "warning": self.warning,
            "alert": self.alert,
            "message": self.message,
        }


def describe(r: MonitorResult) -> str:
    """One line a person can act on."""
    v = "n/a" if finite_or_none(r.value) is None else f"{r.value:.4g}"
    return (
        f"{r.name} on {r.subject} is {r.status}: {v} (warning above {r.warning:g}, alert above {r.alert:g})"
    )


def alerts_for(run: MonitorRun, settings: AlertSettings) -> list[Alert]:
    """The run's results at or above ``settings.min_status`` as alerts (none when alerts are disabled)."""
    if not settings.enabled:
        return []
    level = SEVERITY[settings.min_status]
    return [
        Alert(run.run_id, run.as_of.isoformat(), r.name, r.subject, r.status, finite_or_none(r.value), r.warning,
              r.alert, describe(r))
        for r in run.results
        if SEVERITY[r.status] >= level
    ]  # fmt: skip


class AlertSink(Protocol):
    """Where alerts go; ``send`` must not raise for a delivery problem (it reports it instead)."""

    def send(self, alerts: Sequence[Alert]) -> None: ...


class LogSink:
    """Alerts as log records: ERROR for alerts, WARNING for warnings (``propensity.alerts`` logger)."""

    def __init__(self, log: logging.Logger = logger) -> None:
        self.log = log

    def send(self, alerts: Sequence[Alert]) -> None:
        for a in alerts:
            level = logging.ERROR if a.status == "alert" else logging.WARNING
            self.log.log(level, "%s [%s]", a.message, a.idempotency_key, extra={"alert": a.to_json()})


class WebhookAlertSink:
    """Alerts POSTed as JSON through the activation delivery outbox (one delivery per alert, keyed)."""

    def __init__(self, workspace: Workspace, sink: WebhookSink) -> None:
        self.workspace = workspace
        self.sink = sink

    def send(self, alerts: Sequence[Alert]) -> None:
        try:
            from propensity.activation import delivery  # built by the activation stage
        except ImportError:
            logger.error(
                "alert webhook %s not sent: the delivery outbox (propensity.activation.delivery) is not available",
                self.sink.url,
            )
            return
        enqueue = getattr(delivery, "enqueue_alerts", None)
        if enqueue is None:
            logger.error(
                "alert webhook %s not sent: the delivery outbox has no enqueue_alerts", self.sink.url
            )
            return
        enqueue(self.workspace, self.sink, [a.to_json() for a in alerts])


def sinks_for(workspace: Workspace, settings: AlertSettings) -> list[AlertSink]:
    sinks: list[AlertSink] = [LogSink()] if settings.log else []
    sinks += [WebhookAlertSink(workspace, w) for w in settings.webhooks]
    return sinks


def dispatch(workspace: Workspace, run: MonitorRun, sinks: Sequence[AlertSink] | None = None) -> list[Alert]:
    """Send the run's alerts to every sink (the configured ones by default); return what was sent."""
    settings = workspace.spec.alerts
    alerts = alerts_for(run, settings)
    if alerts:
        for sink in sinks if sinks is not None else sinks_for(workspace, settings):
            sink.send(alerts)
    return alerts
