"""Real-time activation through the server: an event posted to /v1/events rescores its customer and a
`realtime: true` webhook receives the decision, only when it changed."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from starlette.testclient import TestClient
from tests.activation.destinations_fixtures import Receiver

from propensity.activation.realtime import RealtimeActivator
from propensity.server import ServerState, create_app
from propensity.serving.startup import build_service
from propensity.workspace import Workspace


def _wait(predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_a_posted_event_sends_the_changed_decision_to_a_realtime_webhook(
    workspace: Workspace, tmp_path: Path
) -> None:
    receiver = Receiver().start()
    root = tmp_path / "ws"
    shutil.copytree(workspace.root, root, ignore=shutil.ignore_patterns("write.lock"))
    spec = yaml.safe_load((root / "propensity.yaml").read_text())
    spec["destinations"] = [{"name": "crm", "type": "webhook", "url": receiver.url, "realtime": True}]
    (root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    ws = Workspace.open(root)
    service, _ = build_service(ws)
    activator = RealtimeActivator(ws)
    try:
        with TestClient(create_app(ServerState(service=service, workspace=ws, realtime=activator))) as client:
            now = datetime.now(UTC).isoformat()
            event = {
                "event_id": "rt-1",
                "customer_id": "rt-customer",
                "event_type": "page_view",
                "event_time": now,
            }
            assert client.post("/v1/events", json=event).status_code == 200
            assert _wait(lambda: len(receiver.bodies()) == 1), receiver.bodies()
            body = receiver.bodies()[0]
            assert "rt-customer" in str(body)
            key = next(iter(receiver.keys()))
            assert key  # every record carries an idempotency key
            # The same event again is a duplicate: nothing rescored, nothing sent.
            assert client.post("/v1/events", json=event).json()["duplicates"] == 1
            # Another event that leaves the decision as it was sends nothing either.
            again = {**event, "event_id": "rt-2"}
            assert client.post("/v1/events", json=again).status_code == 200
            activator.flush(timeout=10)
            time.sleep(0.3)
            assert len(receiver.bodies()) == 1
    finally:
        activator.close()
        receiver.stop()


@pytest.mark.slow
def test_the_servers_monitor_schedule_exports_the_latest_results_on_metrics(
    workspace: Workspace, tmp_path: Path
) -> None:
    from propensity.monitoring.gauges import MonitorScheduler

    root = tmp_path / "ws"
    shutil.copytree(workspace.root, root, ignore=shutil.ignore_patterns("write.lock"))
    ws = Workspace.open(root)
    service, _ = build_service(ws)
    monitors = MonitorScheduler(ws, interval_s=0.2)
    with TestClient(create_app(ServerState(service=service, workspace=ws, monitors=monitors))) as client:
        assert "propensity_monitor_status" not in client.get("/metrics").text  # nothing has run yet
        monitors.start(run_now=False)
        try:
            assert _wait(lambda: monitors.runs >= 1, timeout=120), "no monitor run finished"
        finally:
            monitors.stop()
        text = client.get("/metrics").text
        assert "propensity_monitor_status{" in text and "propensity_feature_psi{" in text
        # The run is stored, so `propensity monitor` and other processes see it too.
        assert monitors.latest is not None and monitors.failures == 0
