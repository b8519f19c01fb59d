"""`propensity serve` as a real process on a loopback port: it serves, and an acknowledged event survives kill -9."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from propensity.workspace import Workspace


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _call(url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@contextmanager
def _server(ws: Workspace) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "propensity", "serve", "-w", str(ws.root), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:  # poll readiness (the process rebuilds the store and compiles the model first)
            try:
                if _call(f"{base}/readyz")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.stdout else ""
                raise AssertionError(f"server did not become ready:\n{out}")
            time.sleep(0.1)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=20)


def test_serve_predicts_and_an_acknowledged_event_survives_kill_9(workspace: Workspace) -> None:
    cid = "kill9-customer"
    with _server(workspace) as (base, proc):
        status, body = _call(f"{base}/v1/predict?customer_id={cid}")
        assert status == 200 and body["cold_start"] is True
        event = {"event_id": "k9-1", "customer_id": cid, "event_type": "purchase",
                 "event_time": datetime.now(UTC).isoformat(), "amount": 10.0}  # fmt: skip
        status, ack = _call(f"{base}/v1/events", event)
        assert status == 200 and ack["accepted"] == 1
        status, body = _call(f"{base}/v1/predict?customer_id={cid}")
        assert body["cold_start"] is False
        before = body["scores"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    with _server(workspace) as (base, proc):
        status, body = _call(f"{base}/v1/predict?customer_id={cid}")
        assert status == 200 and body["cold_start"] is False  # rebuilt from the log, event included
        assert body["scores"] == before
        status, ack = _call(f"{base}/v1/events", event)
        assert ack == {"received": 1, "accepted": 0, "duplicates": 1}
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal so the exit status reports it.
        assert proc.wait(timeout=20) in (0, -signal.SIGTERM)
