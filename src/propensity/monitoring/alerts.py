"""Alerts: the monitor results at or above ``alerts.min_status``, sent to the configured sinks.

An :class:`Alert` is a plain record of one firing monitor with an idempotency key (``alert:<run id>:<monitor>:<subject>``),
so a sink that retries never delivers one alert twice. Sinks honour :class:`AlertSink`; the log sink writes to
the ``propensity.alerts`` logger, the webhook sink hands alerts to the activation delivery outbox (durable,
retried with backoff, dead-lettered), the same guarantees as the activation webhook.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx

from propensity.config.monitoring import AlertSettings, WebhookSink
from propensity.core.hashing import digest
from propensity.monitoring.monitors import SEVERITY, MonitorResult, finite_or_none
from propensity.monitoring.ranking import explained_by, rank
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
    def key(self) -> str:
        return f"{self.monitor}:{self.subject}"

    @property
    def idempotency_key(self) -> str:
        return f"alert:{self.run_id}:{self.key}"

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
    causes = explained_by(run.results)
    # Ranked: a data failure first, then what it explains (each saying so), then the rest.
    ordered = [r for g in rank(run.results) for r in (g.lead, *g.explained)]
    return [
        Alert(run.run_id, run.as_of.isoformat(), r.name, r.subject, r.status, finite_or_none(r.value), r.warning,
              r.alert, describe(r) + (f" (explained by {causes[r.key]}: fix the data first)"
                                      if r.key in causes else ""))
        for r in ordered
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
    """Alerts POSTed as JSON through the activation delivery outbox, one record per alert under its key.

    The outbox lives in ``.propensity/monitoring/`` (one per URL); alerts it could not deliver in this run stay
    there and go first on the next run, and a failing receiver never fails the monitor run.
    """

    def __init__(
        self, workspace: Workspace, sink: WebhookSink, *, client: httpx.Client | None = None
    ) -> None:
        from propensity.activation.delivery import Outbox

        self.sink = sink
        self.outbox = Outbox(
            workspace.state_dir / "monitoring" / f"alerts-{digest(sink.url.encode())[:12]}.outbox.sqlite"
        )
        self._client = client
        self.last_report: Any = None

    def send(self, alerts: Sequence[Alert]) -> None:
        from propensity.activation.delivery import OutboxRecord

        self.outbox.enqueue_many(OutboxRecord(a.idempotency_key, a.to_json(), subject=a.key) for a in alerts)
        headers = {}
        if self.sink.token_env:
            headers["Authorization"] = f"Bearer {os.environ.get(self.sink.token_env, '')}"
        report = self.outbox.deliver(
            self.sink.url, max_attempts=self.sink.max_attempts, attempts_per_call=self.sink.attempts_per_run,
            timeout_s=self.sink.timeout_s, headers=headers, client=self._client, max_delay_s=5.0,
        )  # fmt: skip
        self.last_report = report
        if report.pending or report.dead_lettered:
            logger.error(
                "alert webhook %s: %d alert(s) wait for the next run, %d dead-lettered to %s",
                self.sink.url, report.pending, report.dead_lettered, self.outbox.dead_letter_path,
            )  # fmt: skip


def sinks_for(workspace: Workspace, settings: AlertSettings) -> list[AlertSink]:
    sinks: list[AlertSink] = [LogSink()] if settings.log else []
    sinks += [WebhookAlertSink(workspace, w) for w in settings.webhooks]
    return sinks


class SentAlerts:
    """Which monitor:subject keys were last sent, at what status and when (``alerts-sent.json``).

    An alert is due when its key was not firing at the last dispatch, when its status got worse, or when it was
    last sent at least ``resend_after`` ago; a key that stops firing is forgotten, so its next firing is sent.
    """

    def __init__(self, workspace: Workspace) -> None:
        self.path = workspace.state_dir / "monitoring" / "alerts-sent.json"

    def load(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        data: dict[str, dict[str, Any]] = json.loads(self.path.read_text(encoding="utf-8"))
        return data

    def due(self, alerts: Sequence[Alert], resend_after: timedelta, now: datetime) -> list[Alert]:
        sent = self.load()
        out = []
        for a in alerts:
            last = sent.get(a.key)
            if (
                last is None
                or SEVERITY[a.status] > SEVERITY[last["status"]]
                or now - datetime.fromisoformat(last["sent_at"]) >= resend_after
            ):
                out.append(a)
        return out

    def record(self, firing: Sequence[Alert], sent: Sequence[Alert], now: datetime) -> None:
        """Keep only the keys firing now; stamp the ones just sent."""
        previous = self.load()
        just_sent = {a.key for a in sent}
        state = {
            a.key: {"status": a.status, "sent_at": now.isoformat()} if a.key in just_sent else previous[a.key]
            for a in firing
            if a.key in just_sent or a.key in previous
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(self.path)


def dispatch(
    workspace: Workspace,
    run: MonitorRun,
    sinks: Sequence[AlertSink] | None = None,
    *,
    now: datetime | None = None,
) -> list[Alert]:
    """Send the run's due alerts (see :class:`SentAlerts`) to every sink (the configured ones by default);
    return what was sent."""
    settings = workspace.spec.alerts
    firing = alerts_for(run, settings)
    ledger = SentAlerts(workspace)
    now = now or datetime.now(UTC)
    due = ledger.due(firing, settings.resend_after.timedelta, now)
    if due:
        for sink in sinks if sinks is not None else sinks_for(workspace, settings):
            sink.send(due)
    ledger.record(firing, due, now)
    return due
