"""Live events: durable `POST /v1/events`, stream ingest from Kafka and Redis Streams, and event → visible.

A real `propensity serve` (the synthetic example project's features, the in-memory store; no model is needed to
answer, the rule-based fallback does) runs in a child process on loopback. Then:

* **HTTP throughput**: ``--batches`` batches of ``--batch`` events (default 1,000), pre-encoded, posted by
  ``--clients`` concurrent clients; each is answered only once it is durable (fsync'd in the server's spool) and
  applied to the online features. Floors in the same run: ``LiveIngest.accept`` alone in this process (the same
  validation SQL, dedupe and fsync'd spool append, no HTTP, no online store), and the previous design's
  ``append_live`` (a DuckDB transaction per batch) for reference.
* **Freshness**: for fresh customers, one event is posted and the next `GET /v1/predict` for that customer is
  checked to reflect it (``cold_start`` flips to false): time from the POST's answer to the prediction showing
  it, and the POST's own latency.
* **Live core** (``--parts core``, in this process, CPU time per batch): validation prepared once per batch
  shape vs planned per batch (what it replaced); stream records parsed into text columns; whole ``accept`` (1,000 events) and ``accept_records``
  (5,000 records) calls with the fsync'd spool.
* **Streams**: ``--stream-events`` events produced into a Kafka topic (Tansu, the Kafka-protocol broker of the
  dev extras, on loopback) and into a Redis stream, then consumed by ``run_streams`` (validate, fsync'd spool,
  commit, move into the log) until the consumer lag is back to zero. Floors in the same run: a bare consumer of
  the same transport reading the same messages with no processing (the broker and client's own speed).

    python -m benchmarks.bench_events [--batches 60] [--batch 1000] [--clients 4] [--stream-events 300000]
        [--parts core,http,kafka,redis,visible]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

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


def _workspace(root: Path, sources: list[dict[str, Any]] | None = None) -> None:
    import yaml

    from propensity.datasets.examples import example_spec_text

    spec = yaml.safe_load(example_spec_text("synthetic"))
    spec["sources"], spec["attributes"] = sources or [], []
    spec["features"] = [f for f in spec["features"] if f.get("kind", "aggregate") != "attribute"]
    kept = {f["name"] for f in spec["features"]}
    # Derived features may refer to attribute features just dropped; keep only those that still resolve.
    spec["features"] = [f for f in spec["features"] if f.get("kind") != "derived" or _refs_ok(f, kept)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")


def _refs_ok(feature: dict[str, Any], kept: set[str]) -> bool:
    from propensity.config.predicates import parse_expression

    return parse_expression(feature["expr"]).refs() <= kept


def _start(root: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    from benchmarks.bench_http import _free_port

    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "propensity",
            "serve",
            "-w",
            str(root),
            "--port",
            str(port),
            "--no-monitor",
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
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


def _post_all(base: str, bodies: list[bytes], clients: int) -> float:
    import httpx

    queue = list(range(len(bodies)))
    lock = threading.Lock()
    errors: list[str] = []

    def work() -> None:
        with httpx.Client(base_url=base, timeout=60, headers={"Content-Type": "application/json"}) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    i = queue.pop()
                r = client.post("/v1/events", content=bodies[i])
                if r.status_code != 200:
                    errors.append(r.text[:200])

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        sys.exit(f"posts failed: {errors[:3]}")
    return time.perf_counter() - t0


def http_part(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import httpx

    from propensity.events.live import EventIdIndex, LiveIngest
    from propensity.events.log import DuckDBEventLog
    from propensity.events.spool import SpoolWriter
    from propensity.serving.ingest import append_live
    from propensity.workspace import Workspace

    rng = np.random.default_rng(3)
    batches = [_batch(k * args.batch, args.batch, args.customers, rng) for k in range(args.batches)]
    bodies = [orjson.dumps({"events": b}) for b in batches]
    # Floor: the live core alone (validate, dedupe, fsync'd spool append), in this process.
    floor_root = tmp / "floor"
    _workspace(floor_root)
    ws = Workspace.open(floor_root)
    live = LiveIngest(
        ws.spec.events, SpoolWriter(DuckDBEventLog(ws.db_path).spool_dir, "bench"), index=EventIdIndex()
    )
    t0, c0 = time.perf_counter(), time.process_time()
    for b in batches:
        live.accept(b)
    floor_s, floor_cpu = time.perf_counter() - t0, time.process_time() - c0
    live.close()
    # The previous design: one DuckDB transaction per batch (a few batches: it is slow).
    old_root = tmp / "old"
    _workspace(old_root)
    old_ws = Workspace.open(old_root)
    few = batches[: max(3, args.batches // 6)]
    t0, c0 = time.perf_counter(), time.process_time()
    for b in few:
        append_live(old_ws, b)
    old_s, old_cpu = time.perf_counter() - t0, time.process_time() - c0

    root = tmp / "served"
    _workspace(root)
    proc, base = _start(root)
    try:
        served_s = _post_all(base, bodies, args.clients)
        single_s = _post_all(base, [orjson.dumps({"events": _batch(10**8 + k * args.batch, args.batch, args.customers,
                                                                  rng)}) for k in range(10)], 1)  # fmt: skip
        post_ms, fresh_ms = [], []
        with httpx.Client(base_url=base, timeout=30) as client:
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
        proc.wait(60)
    with DuckDBEventLog(Workspace.open(root).db_path).connection(read_only=True) as con:
        in_log = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
    total = args.batches * args.batch
    return {
        "http_events_per_s": round(total / served_s),
        "http_one_client_events_per_s": round(10 * args.batch / single_s),
        "floor_live_core_events_per_s": round(total / floor_s),
        "ratio_to_floor": round(floor_s / served_s, 2),
        "previous_design_append_live_events_per_s": round(len(few) * args.batch / old_s),
        # CPU time per batch of the two in-process paths: what the shared machine's load does not distort.
        "floor_live_core_cpu_ms_per_batch": round(floor_cpu / len(batches) * 1000, 2),
        "previous_design_cpu_ms_per_batch": round(old_cpu / len(few) * 1000, 2),
        "events_in_log_after_stop": int(in_log),
        "post_single_event": _pct(post_ms),
        "accepted_to_visible": _pct(fresh_ms),
    }


def core_part(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """The live core in this process, CPU time per batch, each step against what it replaced in the same run:
    validation prepared once per batch shape vs planned per batch; stream records parsed in one pass by Arrow's
    JSON reader vs one ``orjson.loads`` and a Python column build per record; then whole batches end to end
    (HTTP-shaped ``accept`` of 1,000 events, stream-shaped ``accept_records`` of 5,000 records; fsync'd spool)."""
    import pyarrow as pa

    from propensity.events.live import (
        LIVE_SOURCE,
        EventIdIndex,
        LiveIngest,
        Origin,
        event_columns,
    )
    from propensity.events.log import DuckDBEventLog
    from propensity.events.readers import ROW
    from propensity.events.spool import SpoolWriter
    from propensity.workspace import Workspace

    rng = np.random.default_rng(4)
    batches = [_batch(k * args.batch, args.batch, args.customers, rng) for k in range(args.batches)]
    root = tmp / "core"
    _workspace(root)
    ws = Workspace.open(root)
    live = LiveIngest(
        ws.spec.events, SpoolWriter(DuckDBEventLog(ws.db_path).spool_dir, "bench"), index=EventIdIndex()
    )
    tables = [event_columns(b)[0] for b in batches]
    live._validate_now(tables[0], LIVE_SOURCE)  # prepares it, and gives the SQL planned per batch below
    sql = next(iter(live._sql.values()))
    con = live._con()

    def cpu(fn: Any, items: list[Any]) -> float:
        c0 = time.process_time()
        for item in items:
            fn(item)
        return (time.process_time() - c0) / len(items) * 1000

    def planned(table: Any) -> None:
        con.register("chunk", table.append_column(ROW, pa.array(range(1, table.num_rows + 1), pa.int64())))
        try:
            con.sql(sql).to_arrow_table()
        finally:
            con.unregister("chunk")

    planned_ms = cpu(planned, tables)
    prepared_ms = cpu(lambda t: live._validate_now(t, LIVE_SOURCE), tables)
    messages = _stream_messages(min(args.stream_events, 100_000), args.customers)
    chunks = [messages[i : i + 5000] for i in range(0, len(messages), 5000)]
    parse_ms = cpu(lambda c: event_columns([orjson.loads(m) for m in c]), chunks)
    accept_ms = cpu(live.accept, batches)
    origins = [Origin("bench", i, f"record {i}") for i in range(5000)]
    renamed = [[m.replace(b'"k', b'"r', 1) for m in c] for c in chunks]  # new ids: nothing is a duplicate
    records_ms = cpu(lambda c: live.accept_records(c, origins[: len(c)], LIVE_SOURCE), renamed)
    live.close()
    return {
        "validate_cpu_ms_per_1000": {
            "prepared": round(prepared_ms, 2),
            "planned_per_batch": round(planned_ms, 2),
        },
        "parse_records_cpu_ms_per_5000": round(parse_ms, 2),
        "accept_http_batch_cpu_ms_per_1000": round(accept_ms, 2),
        "accept_http_events_per_cpu_s": round(args.batch / accept_ms * 1000),
        "accept_records_cpu_ms_per_5000": round(records_ms, 2),
        "accept_records_events_per_cpu_s": round(5000 / records_ms * 1000),
    }


def _stream_messages(n: int, customers: int) -> list[bytes]:
    rng = np.random.default_rng(5)
    now = datetime.now(UTC).isoformat()
    cust = rng.integers(customers, size=n)
    kinds = rng.integers(len(TYPES), size=n)
    return [
        orjson.dumps({"event_id": f"k{i}", "customer_id": f"c{int(cust[i])}", "event_type": TYPES[int(kinds[i])],
                      "event_time": now, **({"amount": 20.0} if kinds[i] == 3 else {})})
        for i in range(n)
    ]  # fmt: skip


def stream_part(args: argparse.Namespace, tmp: Path, kind: str) -> dict[str, Any]:
    from propensity.serving.streaming import run_streams, stream_sources
    from propensity.workspace import Workspace

    messages = _stream_messages(args.stream_events, args.customers)
    name = f"bench{uuid.uuid4().hex[:8]}"
    env_key: str
    if kind == "kafka":
        from tests.services import start_kafka

        broker = start_kafka()
        stop_broker = broker.process
        broker.create_topic(name, partitions=4)
        t0 = time.perf_counter()
        broker.produce(name, messages, key_of=lambda i: str(i % 64).encode())
        produce_s = time.perf_counter() - t0
        env_key, env_val = "KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap
        source = {"name": "web", "kafka": {"topic": name, "group": "bench"}}
        floor_s = _kafka_floor(broker.bootstrap, name, len(messages))
    else:
        import redis
        from tests.services import start_redis

        server = start_redis()
        stop_broker = server.process
        r = redis.Redis.from_url(server.url)
        t0 = time.perf_counter()
        for start in range(0, len(messages), 10_000):
            pipe = r.pipeline(transaction=False)
            for m in messages[start : start + 10_000]:
                pipe.xadd(name, {"event": m})
            pipe.execute()
        produce_s = time.perf_counter() - t0
        env_key, env_val = "REDIS_URL", server.url
        source = {"name": "web", "redis_stream": {"stream": name, "group": "bench"}}
        floor_s = _redis_floor(server.url, name, len(messages))
    try:
        os.environ[env_key] = env_val
        root = tmp / f"stream-{kind}"
        _workspace(root, [source])
        ws = Workspace.open(root)
        run = run_streams(ws, stream_sources(ws), until_idle=1.0, max_seconds=1800)
        (stats,) = run.stats
        busy = run.seconds - 1.0  # the idle second at the end
    finally:
        stop_broker.terminate()
        stop_broker.wait(30)
    return {
        "events": len(messages),
        "produce_seconds": round(produce_s, 2),
        "consumed": stats.consumed,
        "accepted": stats.accepted,
        "lag_at_end": stats.lag,
        "moved_into_log": run.moved,
        "events_per_s": round(stats.consumed / busy),
        "floor_bare_consumer_events_per_s": round(len(messages) / floor_s),
        "ratio_to_floor": round(floor_s / busy, 2),
    }


def stream_visible_part(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Kafka → visible: a server consuming a topic (`serve --streams`); one event produced for a fresh customer,
    then `GET /v1/predict` polled until it shows it. Time from the produce call's return (the broker has it) to
    the first prediction that reflects it."""
    import httpx
    from confluent_kafka import Producer
    from tests.services import start_kafka

    broker = start_kafka()
    name = f"visible{uuid.uuid4().hex[:8]}"
    try:
        broker.create_topic(name, partitions=2)
        root = tmp / "stream-visible"
        _workspace(root, [{"name": "web", "kafka": {"topic": name, "group": "visible"}}])
        proc, base = _start(root, "--streams", env={"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap})
        producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
        visible_ms: list[float] = []
        try:
            with httpx.Client(base_url=base, timeout=30) as client:
                for i in range(-3, args.probes):  # the first three warm the consumer's assignment up
                    cid = f"kv-{i}"
                    value = orjson.dumps({"event_id": f"kv{i}", "customer_id": cid, "event_type": "page_view",
                                          "event_time": datetime.now(UTC).isoformat()})  # fmt: skip
                    producer.produce(name, value=value)
                    producer.flush(10)
                    t0 = time.perf_counter()
                    deadline = t0 + 60
                    while client.get("/v1/predict", params={"customer_id": cid}).json()["cold_start"]:
                        if time.perf_counter() > deadline:
                            sys.exit("a produced event never became visible")
                    if i >= 0:
                        visible_ms.append((time.perf_counter() - t0) * 1000)
        finally:
            proc.terminate()
            proc.wait(60)
    finally:
        broker.process.terminate()
        broker.process.wait(30)
    return {"produced_to_visible": _pct(visible_ms)}


def _kafka_floor(bootstrap: str, topic: str, n: int) -> float:
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"floor-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "fetch.wait.max.ms": 100, "queued.min.messages": 200_000})  # fmt: skip
    consumer.subscribe([topic])
    got = 0
    first = None
    while got < n:
        msgs = consumer.consume(5000, 1.0)
        if msgs and first is None:
            first = time.perf_counter()  # the group join is not the transport's speed
        got += sum(1 for m in msgs if m.error() is None)
    elapsed = time.perf_counter() - (first or time.perf_counter())
    consumer.close()
    return elapsed


def _redis_floor(url: str, stream: str, n: int) -> float:
    import redis

    r = redis.Redis.from_url(url)
    group = f"floor-{uuid.uuid4().hex[:6]}"
    r.xgroup_create(stream, group, id="0")
    got = 0
    t0 = time.perf_counter()
    while got < n:
        res = r.xreadgroup(group, "floor", {stream: ">"}, count=5000, block=1000)
        if res:
            got += len(res[0][1])
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--probes", type=int, default=300)
    parser.add_argument("--stream-events", type=int, default=300_000)
    parser.add_argument("--parts", default="core,http,kafka,redis,visible")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-events-"))
    load_before = os.getloadavg()
    result: dict[str, Any] = {"config": vars(args), "load_average_before": load_before}
    try:
        parts = args.parts.split(",")
        if "core" in parts:
            result["core"] = core_part(args, tmp)
            print("core:", result["core"])
        if "http" in parts:
            result["http"] = http_part(args, tmp)
            print("http:", result["http"])
        for kind in ("kafka", "redis"):
            if kind in parts:
                result[kind] = stream_part(args, tmp, kind)
                print(f"{kind}:", result[kind])
        if "visible" in parts:
            result["kafka_visible"] = stream_visible_part(args, tmp)
            print("kafka_visible:", result["kafka_visible"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["load_average_after"] = os.getloadavg()
    result["targets"] = {"http_events_per_s": 50_000, "stream_events_per_s": 50_000, "visible_p99_ms": 10}
    everything = set(parts) >= {"http", "kafka", "redis", "visible"}
    print(f"written {save('events' if everything else 'events-' + '-'.join(parts), result)}")


if __name__ == "__main__":
    main()
