"""The live path under faults: `propensity serve` killed with -9 at random moments while events pour in loses no
acknowledged event and counts none twice (in the log and online, through snapshots and restarts); CLI reads of the
workspace while it takes events neither crash nor cause a 5xx."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import write_spec
from tests.serve_process import call
from tests.services import free_port

from propensity.events.log import DuckDBEventLog
from propensity.features.inspect import feature_vector
from propensity.features.offline import FeaturePlan
from propensity.features.online import OnlineFeatureEngine
from propensity.serving.snapshot import load_snapshot, snapshot_dir
from propensity.workspace import Workspace

pytestmark = pytest.mark.slow

SPEC = """
features:
  - {name: views, aggregate: count, event_type: page_view, window: lifetime}
  - {name: views_7d, aggregate: count, event_type: page_view, window: 7d}
  - {name: spend_30d, aggregate: sum, field: amount, event_type: purchase, window: 30d}
"""


@contextmanager
def server(ws: Workspace, *args: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "propensity", "serve", "-w", str(ws.root), "--port", str(port), "--no-monitor",
         *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if call(f"{base}/healthz")[0] == 200:
                break
        except (urllib.error.URLError, ConnectionError):
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _batch(tag: str, n: int) -> list[dict[str, Any]]:
    now = datetime.now(UTC).isoformat()
    out = []
    for i in range(n):
        kind = "purchase" if i % 5 == 0 else "page_view"
        event: dict[str, Any] = {"event_id": f"{tag}-{i}", "customer_id": f"c{i % 23}", "event_type": kind,
                                 "event_time": now}  # fmt: skip
        if kind == "purchase":
            event["amount"] = 1.5
        out.append(event)
    return out


def _online_state_equals_the_log(ws: Workspace) -> None:
    """The snapshot a server wrote at shutdown (its online state) equals a replay of the log, customer by
    customer: no event applied twice or missed."""
    plan = FeaturePlan(ws.spec.features)
    snap = OnlineFeatureEngine(plan)
    assert load_snapshot(snapshot_dir(ws.state_dir), snap) is not None
    replay = OnlineFeatureEngine(plan)
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        replay.rebuild(con)
    assert sorted(snap.customer_ids()) == sorted(replay.customer_ids())
    t = max(snap.watermark, replay.watermark) + 1
    for cid in replay.customer_ids():
        assert snap.vector(cid, t) == replay.vector(cid, t), cid


def test_kill_9_at_random_moments_loses_no_acknowledged_event_and_counts_none_twice(tmp_path: Path) -> None:
    ws = write_spec(tmp_path, SPEC)
    rng = random.Random(7)
    acked: set[str] = set()
    unacked: list[list[dict[str, Any]]] = []
    k = 0
    for round_ in range(2):
        with server(ws, "--snapshot-minutes", "0.01") as (base, proc):
            # Retry what the last server may or may not have taken, and one batch it surely did.
            for batch in [*unacked, *([_batch("r0-b0", 40)] if round_ else [])]:
                status, body = call(f"{base}/v1/events", {"events": batch})
                assert status == 200, body
                acked.update(e["event_id"] for e in batch)
            unacked = []
            stop = threading.Event()

            def post(
                base: str = base, round_: int = round_, stop: threading.Event = stop,
                unacked: list[list[dict[str, Any]]] = unacked,
            ) -> None:  # fmt: skip
                nonlocal k
                while not stop.is_set():
                    batch = _batch(f"r{round_}-b{k}", 40)
                    k += 1
                    try:
                        status, _ = call(f"{base}/v1/events", {"events": batch})
                    except (urllib.error.URLError, ConnectionError, OSError):
                        unacked.append(batch)
                        return
                    assert status == 200
                    acked.update(e["event_id"] for e in batch)

            client = threading.Thread(target=post)
            client.start()
            time.sleep(rng.uniform(0.5, 2.0))  # fault injection: kill at a random moment of the load
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            stop.set()
            client.join(30)
    with server(ws) as (base, proc):
        for batch in unacked:
            assert call(f"{base}/v1/events", {"events": batch})[0] == 200
            acked.update(e["event_id"] for e in batch)
        proc.send_signal(signal.SIGTERM)  # a clean stop: the spool moved in, a snapshot written
        assert proc.wait(30) in (0, -signal.SIGTERM)
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        ids = [r[0] for r in con.execute("SELECT event_id FROM events").fetchall()]
    assert len(ids) == len(set(ids)), "an event is in the log twice"
    assert acked <= set(ids), f"{len(acked - set(ids))} acknowledged events lost"
    assert len(acked) > 200
    _online_state_equals_the_log(ws)


def test_cli_reads_while_the_server_takes_events_neither_crash_nor_cause_a_5xx(tmp_path: Path) -> None:
    ws = write_spec(tmp_path, SPEC)
    statuses: list[int] = []
    posted: list[str] = []
    with server(ws) as (base, _):
        stop = threading.Event()

        def post() -> None:
            k = 0
            while not stop.is_set():
                batch = _batch(f"p{k}", 20)
                k += 1
                statuses.append(call(f"{base}/v1/events", {"events": batch})[0])
                posted.extend(e["event_id"] for e in batch)

        client = threading.Thread(target=post)
        client.start()
        try:
            plan = FeaturePlan(ws.spec.features)
            log = DuckDBEventLog(ws.db_path)
            for i in range(100):  # 100 interleavings of readers with the server's moves
                if i % 3 == 0:
                    log.read(customer_ids=["c1", "c2"])
                elif i % 3 == 1:
                    with log.connection(read_only=True) as con:
                        feature_vector(con, plan, "c1", datetime.now(UTC))
                else:
                    log.count()
            for _ in range(1):  # and the real command, as a user runs it
                done = subprocess.run(
                    [sys.executable, "-m", "propensity", "features", "show", "c1", "-w", str(ws.root)],
                    capture_output=True, text=True, timeout=120,
                )  # fmt: skip
                assert done.returncode == 0, done.stdout + done.stderr
        finally:
            stop.set()
            client.join(30)
    assert statuses and all(s == 200 for s in statuses), sorted(set(statuses))
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        n = con.execute("SELECT count(DISTINCT event_id) FROM events").fetchall()[0][0]
    assert n == len(set(posted))
