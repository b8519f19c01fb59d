"""`propensity serve` as a real process on a loopback port: it serves, and an acknowledged event survives kill -9."""

from __future__ import annotations

import os
import signal
from datetime import UTC, datetime

from tests.serve_process import call, same_scores, serve_process

from propensity.workspace import Workspace


def test_serve_predicts_and_an_acknowledged_event_survives_kill_9(workspace: Workspace) -> None:
    cid = "kill9-customer"
    with serve_process(workspace) as (base, proc):
        status, body = call(f"{base}/v1/predict?customer_id={cid}")
        assert status == 200 and body["cold_start"] is True
        event = {"event_id": "k9-1", "customer_id": cid, "event_type": "purchase",
                 "event_time": datetime.now(UTC).isoformat(), "amount": 10.0}  # fmt: skip
        status, ack = call(f"{base}/v1/events", event)
        assert status == 200 and ack["accepted"] == 1
        status, body = call(f"{base}/v1/predict?customer_id={cid}")
        assert body["cold_start"] is False
        before = body["scores"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    with serve_process(workspace) as (base, proc):
        status, body = call(f"{base}/v1/predict?customer_id={cid}")
        assert status == 200 and body["cold_start"] is False  # rebuilt from the log, event included
        assert same_scores(body["scores"], before)
        status, ack = call(f"{base}/v1/events", event)
        assert ack == {"received": 1, "accepted": 0, "duplicates": 1}
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal so the exit status reports it.
        assert proc.wait(timeout=20) in (0, -signal.SIGTERM)
