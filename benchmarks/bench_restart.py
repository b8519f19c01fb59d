"""Server restart: time until `propensity serve` answers, from a snapshot plus the log's tail vs replaying the log.

The synthetic example project (all its features, attributes included) over the generator's data, cached in
``benchmarks/.data/`` with `bench_features`' loader (default: the quickstart's size, 10,000 customers x 180 days,
about 1.3M events; ``--customers 1000000 --days 90`` for the large case). In the same run:

1. **full replay** (the baseline): ``serve --no-snapshots`` from the log; time from launch to the first answered
   ``/healthz`` (the server answers only once its online store is loaded); then SIGTERM, which writes a snapshot;
2. a **tail**: ``--tail`` new events ingested after the snapshot (as `propensity ingest` would while no server
   runs);
3. **snapshot + tail**: ``serve`` again; time to the first answer, and how it started (the server's own report).

    python -m benchmarks.bench_restart [--customers 10000] [--days 180] [--tail 10000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks._harness import save


def _workspace(root: Path, db: Path) -> None:
    import yaml

    from propensity.datasets.examples import example_spec_text

    spec = yaml.safe_load(example_spec_text("synthetic"))
    spec["sources"] = []  # the log is copied in; attributes stay declared (their rows are in the log too)
    root.mkdir(parents=True, exist_ok=True)
    (root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    state = root / ".propensity"
    state.mkdir(exist_ok=True)
    shutil.copy(db, state / "propensity.duckdb")


def _serve(root: Path, *args: str) -> tuple[float, str, int, float]:
    """Launch, wait for /healthz, stop with SIGTERM; returns (seconds to ready, the start-up line, peak RSS KiB,
    the server's CPU seconds (user + system) until ready: what a quiet machine's wall time would be close to)."""
    import httpx
    import psutil

    from benchmarks.bench_http import _free_port

    port = _free_port()
    log = root / f"serve-{port}.log"
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "propensity", "serve", "-w", str(root), "--port", str(port), "--no-monitor", *args],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "250", "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        peak = 0
        cpu = 0.0
        watched = psutil.Process(proc.pid)
        while True:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, watched.memory_info().rss // 1024)
                times = watched.cpu_times()
                cpu = times.user + times.system
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                    with contextlib.suppress(psutil.Error):
                        times = watched.cpu_times()
                        cpu = times.user + times.system
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                sys.exit(f"serve exited: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        ready = time.perf_counter() - t0
        proc.send_signal(signal.SIGTERM)
        proc.wait(600)
    text = log.read_text()
    line = next((ln for ln in text.splitlines() if "online store" in ln), "")
    return ready, re.sub(r"\s+", " ", line).strip(), peak, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--tail", type=int, default=10_000, help="events ingested after the snapshot")
    args = parser.parse_args()
    import pyarrow as pa

    from benchmarks.bench_features import dataset
    from propensity.events.ingest import ingest_table
    from propensity.workspace import Workspace

    load_before = os.getloadavg()
    db, info = dataset(args.customers, args.days)
    tmp = Path(tempfile.mkdtemp(prefix="bench-restart-", dir=Path(__file__).parent / ".data"))
    try:
        root = tmp / "ws"
        _workspace(root, db)
        full_s, full_line, full_rss, full_cpu = _serve(root, "--no-snapshots")
        snaps = list((root / ".propensity" / "snapshots").glob("*.snap"))
        snapshot_bytes = sum(p.stat().st_size for p in snaps)
        ws = Workspace.open(root)
        now = datetime.now(UTC)
        n = args.tail
        tail = pa.table({
            "event_id": [f"tail-{i}" for i in range(n)],
            "customer_id": [f"c{i % max(1, args.customers)}" for i in range(n)],
            "event_type": ["page_view"] * n,
            "event_time": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
        })  # fmt: skip
        ingest_table(ws, tail)
        snap_s, snap_line, snap_rss, snap_cpu = _serve(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    replayed = re.search(r"\+ ([\d,]+) events replayed", snap_line)
    result: dict[str, Any] = {
        "config": vars(args),
        "data": info,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "full_replay": {
            "ready_seconds": round(full_s, 2),
            "cpu_seconds": round(full_cpu, 2),
            "startup": full_line,
            "peak_rss_mib": full_rss // 1024,
        },
        "snapshot_plus_tail": {
            "ready_seconds": round(snap_s, 2),
            "cpu_seconds": round(snap_cpu, 2),
            "startup": snap_line,
            "events_replayed": int(replayed.group(1).replace(",", "")) if replayed else None,
            "peak_rss_mib": snap_rss // 1024,
        },
        "snapshot_mib": round(snapshot_bytes / 2**20, 1),
        "speedup": round(full_s / snap_s, 2),
        "speedup_cpu": round(full_cpu / max(snap_cpu, 1e-9), 2),
        "target_seconds": 5 if args.customers <= 10_000 else 60,
    }
    for k, v in result.items():
        print(f"{k:>20}: {v}")
    name = "restart" if args.customers <= 10_000 else f"restart-{args.customers}"
    print(f"written {save(name, result)}")


if __name__ == "__main__":
    main()
