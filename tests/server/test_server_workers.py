"""`propensity serve --workers 2` on a Redis store: both workers answer, share the online state and the metrics
(multi-process prometheus_client), and follow a promotion made through either of them."""

from __future__ import annotations

import re
import shutil
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.serve_process import call, serve_process
from tests.services import RedisServer

from propensity.registry.registry import Registry
from propensity.workspace import Workspace

pytestmark = [pytest.mark.service, pytest.mark.slow]


def test_workers_share_state_metrics_and_model_moves(
    workspace: Workspace, redis_server: RedisServer, tmp_path: Path
) -> None:
    root = tmp_path / "ws"
    shutil.copytree(workspace.root, root, ignore=shutil.ignore_patterns("write.lock"))
    ws = Workspace.open(root)
    with serve_process(ws, "--workers", "2", "--store", redis_server.url, "--no-monitor") as (base, _):
        pids = set()
        for _ in range(40):  # connections spread over both workers
            status, body = call(f"{base}/v1/predict?customer_id=w-new")
            assert status == 200 and body["cold_start"] is True
        event = {"event_id": "w-1", "customer_id": "w-new", "event_type": "purchase", "amount": 9.0,
                 "event_time": datetime.now(UTC).isoformat()}  # fmt: skip
        assert call(f"{base}/v1/events", event) == (200, {"received": 1, "accepted": 1, "duplicates": 0})
        # Whichever worker answers, the event is there.
        assert all(call(f"{base}/v1/predict?customer_id=w-new")[1]["cold_start"] is False for _ in range(20))
        text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
        served = re.search(
            r'^propensity_http_requests_total\{route="predict",status="200"\} ([0-9.e+]+)$', text, re.M
        )
        assert served is not None and float(served.group(1)) == 60  # the sum over both workers
        assert "propensity_events_accepted_total 1.0" in text
        for line in text.splitlines():
            if line.startswith("process_pid") or line.startswith("process_start_time_seconds"):
                pids.add(line)
        assert pids  # process metrics are exported
        # A rollback through one worker reaches the other within the follow period.
        registry = Registry(ws)
        before = registry.production()
        assert call(f"{base}/v1/models/rollback", {})[0] in (200, 409)
        after = Registry(ws).production()
        if after != before:
            deadline = time.monotonic() + 10
            while {call(f"{base}/v1/predict?customer_id=x")[1]["model_version"] for _ in range(10)} != {
                after
            }:
                assert time.monotonic() < deadline
                time.sleep(0.2)


def test_more_than_one_worker_needs_a_shared_store(workspace: Workspace) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "propensity", "serve", "-w", str(workspace.root), "--workers", "2"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 2 and "--store redis://" in " ".join(out.stdout.split())
