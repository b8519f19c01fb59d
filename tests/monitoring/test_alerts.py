"""Alerts: thresholds from config decide the status; the log and webhook sinks deliver each alert once."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from tests.monitoring.drift_project import END
from tests.services import free_port

from propensity.config.monitoring import AlertSettings, Threshold, WebhookSink
from propensity.config.spec import parse_spec
from propensity.core.errors import PropensityError
from propensity.monitoring.alerts import Alert, LogSink, WebhookAlertSink, alerts_for, dispatch
from propensity.monitoring.monitors import classify, volume_monitor
from propensity.monitoring.runner import run_monitors
from propensity.monitoring.store import MonitorRun
from propensity.workspace import Workspace


def test_thresholds_resolve_subject_then_monitor_then_default() -> None:
    alerts = AlertSettings.model_validate(
        {"thresholds": {"volume": {"warning": 3, "alert": 9}, "volume:web": {"warning": 1.1, "alert": 1.5}}}
    )
    assert alerts.threshold("volume", "web") == Threshold(warning=1.1, alert=1.5)
    assert alerts.threshold("volume", "crm") == Threshold(warning=3, alert=9)
    assert alerts.threshold("feature_psi", "x") == Threshold(warning=0.1, alert=0.25)
    assert volume_monitor("web", last_day=60, trailing=[100] * 5, alerts=alerts).status == "alert"
    assert volume_monitor("crm", last_day=60, trailing=[100] * 5, alerts=alerts).status == "ok"
    assert classify(float("nan"), Threshold(warning=0.1, alert=0.2)) == "ok"


@pytest.mark.parametrize(
    ("alerts", "fragment"),
    [
        ({"thresholds": {"feature_drift": {"warning": 1, "alert": 2}}}, "unknown monitor 'feature_drift'"),
        ({"thresholds": {"volume": {"warning": 3, "alert": 2}}}, "alert (2.0) must be at least warning"),
        ({"min_status": "info"}, "min_status"),
        ({"webhooks": [{"url": "ftp://x"}]}, "url"),
    ],
)
def test_bad_alert_settings_name_the_key(alerts: dict, fragment: str) -> None:
    with pytest.raises(PropensityError) as err:
        parse_spec({"alerts": alerts}, root=Path("."))
    assert "alerts" in str(err.value) and fragment in str(err.value)


def test_log_sink_reports_alerts_at_or_above_min_status(
    broken_workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    run = run_monitors(broken_workspace, as_of=END, store=False, send_alerts=False)
    with caplog.at_level(logging.WARNING, logger="propensity.alerts"):
        sent = alerts_for(run, broken_workspace.spec.alerts)
        LogSink().send(sent)
    assert {(a.monitor, a.subject) for a in sent} == {("freshness_silence", "crm"), ("volume", "crm")}
    assert all(r.levelno == logging.ERROR for r in caplog.records)
    assert any("freshness_silence on crm is alert" in r.getMessage() for r in caplog.records)
    assert any(f"alert:{run.run_id}:volume:crm" in r.getMessage() for r in caplog.records)
    assert alerts_for(run, AlertSettings(enabled=False)) == []


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict]]] = []
    failures_left: ClassVar[int] = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if _Receiver.failures_left > 0:
            _Receiver.failures_left -= 1
            self.send_response(503)
            self.end_headers()
            return
        _Receiver.received.append((self.headers["Idempotency-Key"], json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    _Receiver.received = []
    _Receiver.failures_left = 0
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/alerts"
    server.shutdown()
    server.server_close()


def test_webhook_sink_delivers_each_alert_once_through_the_outbox(
    broken_workspace: Workspace, receiver: str
) -> None:
    run = run_monitors(broken_workspace, as_of=END, store=False, send_alerts=False)
    _Receiver.failures_left = 1  # the first attempt meets a 503: retried with backoff
    sink = WebhookAlertSink(broken_workspace, WebhookSink(url=receiver))
    firing = alerts_for(run, broken_workspace.spec.alerts)
    sink.send(firing)
    sink.send(firing)  # the same alerts again (a retrying caller): the outbox knows their keys
    keys = [k for k, _ in _Receiver.received]
    assert sorted(keys) == sorted(
        {f"alert:{run.run_id}:freshness_silence:crm", f"alert:{run.run_id}:volume:crm"}
    )
    payload = dict(_Receiver.received)[f"alert:{run.run_id}:volume:crm"]
    assert payload["status"] == "alert" and payload["monitor"] == "volume" and payload["subject"] == "crm"


def test_a_receiver_that_is_down_never_fails_the_monitor_run(broken_workspace: Workspace) -> None:
    dead = f"http://127.0.0.1:{free_port()}/alerts"
    run = run_monitors(broken_workspace, as_of=END, store=False, send_alerts=False)
    sink = WebhookAlertSink(broken_workspace, WebhookSink(url=dead, attempts_per_run=1))
    sink.send(alerts_for(run, broken_workspace.spec.alerts))
    assert sink.last_report.pending == 2  # kept for the next run


class _Collect:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, alerts: Sequence[Alert]) -> None:
        self.sent += [a.key for a in alerts]


def test_a_monitor_that_keeps_firing_is_sent_again_only_after_resend_after(
    broken_workspace: Workspace,
) -> None:
    (broken_workspace.state_dir / "monitoring" / "alerts-sent.json").unlink(missing_ok=True)
    run = run_monitors(broken_workspace, as_of=END, store=False, send_alerts=False)
    sink = _Collect()
    t0 = datetime(2025, 4, 1, tzinfo=UTC)
    for hours in (0, 1, 23):  # hourly runs, resend_after 24h: only the first sends
        dispatch(broken_workspace, run, sinks=[sink], now=t0 + timedelta(hours=hours))
    assert sorted(sink.sent) == ["freshness_silence:crm", "volume:crm"]
    dispatch(broken_workspace, run, sinks=[sink], now=t0 + timedelta(hours=24))
    assert len(sink.sent) == 4
    quiet = MonitorRun(run.run_id, run.as_of, run.started_at, run.finished_at, run.bundle_id,
                       [r for r in run.results if r.subject != "crm"])  # fmt: skip
    dispatch(broken_workspace, quiet, sinks=[sink], now=t0 + timedelta(hours=25))  # resolved: forgotten
    dispatch(broken_workspace, run, sinks=[sink], now=t0 + timedelta(hours=26))  # fires again: sent at once
    assert len(sink.sent) == 6
