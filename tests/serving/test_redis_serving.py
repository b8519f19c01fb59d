"""Servers on a Redis store: two `propensity serve` processes share features (the acceptance test), and a Redis
that goes away gives 503s, not crashes, until it is back."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import pytest
import redis
from starlette.testclient import TestClient
from tests.serve_process import call, same_scores, serve_process, wait_ready
from tests.services import RedisServer, free_port

from propensity.events.log import DuckDBEventLog
from propensity.server import ServerState, create_app
from propensity.serving.startup import build_service
from propensity.workspace import Workspace

pytestmark = [pytest.mark.service, pytest.mark.slow]


def _busiest_customer(ws: Workspace) -> str:
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        row = con.execute(
            "SELECT customer_id FROM events GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
        ).fetchall()
    return str(row[0][0])


def test_an_event_posted_to_one_server_changes_the_next_prediction_on_the_other(
    trained_workspace: Workspace, redis_server: RedisServer
) -> None:
    """Acceptance: two server processes on one workspace and one Redis (started together: one loads the log,
    the other waits for it); events posted to A change B's very next prediction, features and scores."""
    ws = trained_workspace
    customer = _busiest_customer(ws)
    newcomer = "redis-acceptance-newcomer"
    with ExitStack() as stack:
        a, proc_a = stack.enter_context(serve_process(ws, "--store", redis_server.url, wait=False))
        b, proc_b = stack.enter_context(serve_process(ws, "--store", redis_server.url, wait=False))
        wait_ready(a, proc_a)
        wait_ready(b, proc_b)
        status, before = call(f"{b}/v1/predict?customer_id={customer}")
        assert status == 200 and before["cold_start"] is False
        status, cold = call(f"{b}/v1/predict?customer_id={newcomer}")
        assert status == 200 and cold["cold_start"] is True
        now = datetime.now(UTC)
        events = [
            {"event_id": f"acc-{c}-{i}", "customer_id": c, "event_type": kind, "amount": 80.0 if kind == "purchase"
             else None, "event_time": (now - timedelta(seconds=i)).isoformat()}
            for c in (customer, newcomer) for i, kind in enumerate(["purchase", "cart_add", "page_view"] * 6)
        ]  # fmt: skip
        status, ack = call(f"{a}/v1/events", {"events": events})
        assert status == 200 and ack["accepted"] == len(events)
        status, after = call(f"{b}/v1/predict?customer_id={customer}")
        assert status == 200
        assert after["scores"] != before["scores"]
        status, warm = call(f"{b}/v1/predict?customer_id={newcomer}")
        assert warm["cold_start"] is False and warm["scores"] != cold["scores"]
        # The same through A: both servers read one state.
        assert same_scores(call(f"{a}/v1/predict?customer_id={customer}")[1]["scores"], after["scores"])
        # A duplicate posted to B is recognised as one.
        assert call(f"{b}/v1/events", events[0])[1] == {"received": 1, "accepted": 0, "duplicates": 1}
        metrics = urllib.request.urlopen(f"{b}/metrics", timeout=10).read().decode()
        assert "propensity_online_customers " in metrics


def _start_redis(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    assert binary is not None
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_redis_outage_gives_503s_and_the_server_recovers(trained_workspace: Workspace) -> None:
    port = free_port()
    redis_proc = _start_redis(port)
    try:
        service, _ = build_service(trained_workspace, online_store=f"redis://127.0.0.1:{port}/0")
        client = TestClient(create_app(ServerState(service=service, workspace=trained_workspace)))
        customer = "outage-customer"
        assert client.get(f"/v1/predict?customer_id={customer}").json()["cold_start"] is True
        redis_proc.terminate()
        redis_proc.wait(10)

        r = client.get(f"/v1/predict?customer_id={customer}")
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
        event = {"event_id": "outage-1", "customer_id": customer, "event_type": "purchase", "amount": 3.0,
                 "event_time": datetime.now(UTC).isoformat()}  # fmt: skip
        r = client.post("/v1/events", json=event)
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
        assert client.get("/metrics").status_code == 200
        assert client.get("/healthz").status_code == 200

        redis_proc = _start_redis(port)  # back (empty: this Redis keeps nothing on disk)
        # The circuit breaker lets a trial through one redis_timeout after the last failure; until then
        # requests fail at once (503) without touching Redis.
        deadline = time.monotonic() + 10 * service.store.timeout  # type: ignore[attr-defined]
        while (r := client.get(f"/v1/predict?customer_id={customer}")).status_code == 503:
            assert time.monotonic() < deadline, "the server did not reconnect to Redis"
            time.sleep(0.05)
        # The event appended while Redis was away was kept and applied once it came back.
        assert r.status_code == 200 and r.json()["cold_start"] is False
        assert client.post("/v1/events", json=event).json() == {"received": 1, "accepted": 0, "duplicates": 1}
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
