"""A hung Redis must not stall the server (issue 19, item 2; reproduced first: predictions took 4–20 s to fail,
/healthz 10–26 s, event posts hung). A real `propensity serve` on a Redis store; the redis-server is stopped
with SIGSTOP (alive, accepting connections, answering nothing), then resumed."""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from tests.serve_process import call, serve_process
from tests.services import start_redis

from propensity.workspace import Workspace

pytestmark = [pytest.mark.service, pytest.mark.slow]

TIMEOUT = 0.5  # serving.redis_timeout for this test


def _timed(url: str, body: object = None) -> tuple[int, float]:
    started = time.perf_counter()
    status, _ = call(url, body)
    return status, time.perf_counter() - started


def _healthz_ms(base: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(f"{base}/healthz", timeout=10) as r:
        assert r.status == 200
    return (time.perf_counter() - started) * 1000


def test_a_hung_redis_gives_fast_503s_and_healthz_keeps_answering(
    trained_workspace: Workspace, tmp_path: Path
) -> None:
    root = tmp_path / "ws"
    shutil.copytree(trained_workspace.root, root, ignore=shutil.ignore_patterns("write.lock"))
    spec = yaml.safe_load((root / "propensity.yaml").read_text())
    spec["serving"] = {**spec.get("serving", {}), "redis_timeout": TIMEOUT}
    (root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    ws = Workspace.open(root)
    redis = start_redis()
    try:
        with serve_process(ws, "--store", redis.url, "--no-monitor") as (base, _):
            assert call(f"{base}/v1/predict?customer_id=c1")[0] == 200
            os.kill(redis.process.pid, signal.SIGSTOP)
            try:
                # A prediction in flight on the hung connection: /healthz does not wait for it.
                slow: list[tuple[int, float]] = []
                worker = threading.Thread(
                    target=lambda: slow.append(_timed(f"{base}/v1/predict?customer_id=c2"))
                )
                worker.start()
                during = [_healthz_ms(base) for _ in range(5)]
                worker.join(30)
                status, seconds = slow[0]
                assert status == 503 and seconds < 2 * TIMEOUT, slow
                assert statistics.median(during) < 50, during
                # The breaker is open: predictions fail at once instead of each waiting for Redis.
                started = time.perf_counter()
                answers = [call(f"{base}/v1/predict?customer_id=c{i}") for i in range(20)]
                assert {s for s, _ in answers} == {503}
                assert answers[0][1]["error"]["code"] == "store_unavailable"
                assert time.perf_counter() - started < 3 * TIMEOUT
                # An event post answers (503: durable in the log, applied once Redis is back).
                event = {"event_id": "hung-1", "customer_id": "hung-customer", "event_type": "purchase",
                         "amount": 5.0, "event_time": datetime.now(UTC).isoformat()}  # fmt: skip
                status, seconds = _timed(f"{base}/v1/events", event)
                assert status == 503 and seconds < 10, seconds
                assert statistics.median(_healthz_ms(base) for _ in range(5)) < 50
                metrics = urllib.request.urlopen(f"{base}/metrics", timeout=2).read().decode()
                assert "propensity_online_customers " in metrics
            finally:
                os.kill(redis.process.pid, signal.SIGCONT)
            # Back: the server recovers by itself, and the event kept while Redis hung is applied.
            deadline = time.monotonic() + 10
            while (answer := call(f"{base}/v1/predict?customer_id=hung-customer"))[0] != 200:
                assert time.monotonic() < deadline, answer
                time.sleep(0.05)
            assert answer[1]["cold_start"] is False
    finally:
        redis.process.kill()
        redis.process.wait(10)
