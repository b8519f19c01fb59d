"""Live ingest through the HTTP API: durable `POST /v1/events` throughput and event-to-prediction freshness.

A real `propensity serve` (the synthetic example project's features, the in-memory store; no model is needed to
answer, the rule-based fallback does) runs in a child process on loopback. Then:

* **throughput**: batches of ``--batch`` events (default 1,000) posted back to back by one client, each answered
  only after the batch is committed to the DuckDB event log and applied to the online features;
* **freshness**: for fresh customers, one event is posted and the next `GET /v1/predict` for that customer is
  checked to reflect it (``cold_start`` flips to false); we report the time from the event's acceptance (the POST's
  answer) to the prediction that shows it, and the POST's own latency.

The floor in the same run is the DuckDB part alone: the same batches appended with the same validation and commit
by `append_live`, in this process, with no HTTP and no online store.

    python -m benchmarks.bench_events [--batches 60] [--batch 1000] [--probes 300]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import save

TYPES = ("page_view", "product_view", "cart_add", "purchase", "search")


def _batch(start: int, n: int, customers: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    out = []
    for i in range(start, start + n):
        etype = TYPES[int(rng.integers(len(TYPES)))]
        event: dict[str, Any] = {
            "event_id": f"b{i}",
            "customer_id": f"c{int(rng.integers(customers))}",
            "event_type": etype,
            "event_time": (now - timedelta(seconds=float(rng.integers(0, 3600)))).isoformat(),
        }
        if etype == "purchase":
            event["amount"] = round(float(rng.exponential(40.0)), 2)
        out.append(event)
    return out


def _workspace(root: Path) -> None:
    import yaml

    from propensity.cli.project import example_spec_text

    spec = yaml.safe_load(example_spec_text("synthetic"))
    spec["sources"], spec["attributes"] = [], []
    spec["features"] = [f for f in spec["features"] if f.get("kind", "aggregate") != "attribute"]
    kept = {f["name"] for f in spec["features"]}
    # Derived features may refer to attribute features just dropped; keep only those that still resolve.
    spec["features"] = [f for f in spec["features"] if f.get("kind") != "derived" or _refs_ok(f, kept)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")


def _refs_ok(feature: dict[str, Any], kept: set[str]) -> bool:
    from propensity.config.predicates import parse_expression

    return parse_expression(feature["expr"]).refs() <= kept


def _start(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    from benchmarks.bench_http import _free_port

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "propensity", "serve", "-w", str(root), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    sys.exit("the server did not start")


def _pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "max_ms": round(float(a.max()), 3),
        "n": len(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--probes", type=int, default=300)
    args = parser.parse_args()
    import httpx

    from propensity.serving.ingest import append_live
    from propensity.workspace import Workspace

    rng = np.random.default_rng(3)
    tmp = Path(tempfile.mkdtemp(prefix="bench-events-"))
    try:
        # The floor: DuckDB append with validation, no HTTP, no online store, in this process.
        floor_ws_root = tmp / "floor"
        _workspace(floor_ws_root)
        floor_ws = Workspace.open(floor_ws_root)
        batches = [_batch(k * args.batch, args.batch, args.customers, rng) for k in range(args.batches)]
        t0 = time.perf_counter()
        for b in batches:
            append_live(floor_ws, b)
        floor_s = time.perf_counter() - t0

        root = tmp / "served"
        _workspace(root)
        proc, base = _start(root)
        try:
            with httpx.Client(base_url=base, timeout=30) as client:
                t0 = time.perf_counter()
                for b in batches:
                    r = client.post("/v1/events", json={"events": b})
                    assert r.status_code == 200 and r.json()["accepted"] == len(b), r.text
                served_s = time.perf_counter() - t0
                post_ms, fresh_ms = [], []
                for i in range(args.probes):
                    cid = f"fresh-{i}"
                    event = {"event_id": f"p{i}", "customer_id": cid, "event_type": "page_view",
                             "event_time": datetime.now(UTC).isoformat()}  # fmt: skip
                    t_send = time.perf_counter()
                    r = client.post("/v1/events", json=event)
                    t_accepted = time.perf_counter()
                    assert r.status_code == 200, r.text
                    while client.get("/v1/predict", params={"customer_id": cid}).json()["cold_start"]:
                        pass  # never loops when events are visible on acceptance; counted if it did
                    t_visible = time.perf_counter()
                    post_ms.append((t_accepted - t_send) * 1000)
                    fresh_ms.append((t_visible - t_accepted) * 1000)
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = args.batches * args.batch
    result = {
        "config": vars(args),
        "load_average": os.getloadavg(),
        "http_events_per_s": round(total / served_s),
        "floor_append_live_events_per_s": round(total / floor_s),
        "ratio_to_floor": round(floor_s / served_s, 2),
        "post_single_event": _pct(post_ms),
        "accepted_to_visible": _pct(fresh_ms),
    }
    for k, v in result.items():
        print(f"{k:>32}: {v}")
    print(f"written {save('events', result)}")


if __name__ == "__main__":
    main()
