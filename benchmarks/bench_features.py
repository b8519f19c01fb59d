"""Benchmark the feature engines: offline spines against a hand-written SQL floor, online apply and read.

    python -m benchmarks.bench_features                      # full size: 200k customers x 50 days (~10M events)
    python -m benchmarks.bench_features --quick              # smoke run: 4k customers x 21 days
    python -m benchmarks.bench_features --online-only        # the online engine only (features-online.json)
    python -m benchmarks.bench_features --customers 100000 --days 30 --events 1000000,3000000

Targets (issue 3): offline, 10M events, 200k customers, ~40 features: a 200k-row spine (one cutoff each) < 5 s,
a 2M-row training spine (ten weekly cutoffs each) < 30 s, peak RSS < 4 GiB, on 2 cores; online >= 200k events/s
applied in-process, one vector read p99 < 50 µs, bytes of state per customer.

The data is the synthetic generator's, cached under ``benchmarks/.data/`` (git-ignored) together with a DuckDB
file holding the event log (deduplicated, ``device``/``page`` as JSON properties, as the ingester stores them)
and the customer attributes in long form. Scaling with events uses fixed random subsets of each customer's
events (``hash(event_id)``), so the spine stays the same. Every offline step runs in a fresh process
(``_harness.measure``) so its peak RSS is its own. The floor is one hand-written DuckDB range join computing 30
windowed aggregates for the same 200k-row spine; the engine's time is reported as a ratio to it, because on a
shared 2-core machine absolute times move with the load (recorded before and after).

Results go to ``benchmarks/results/features.json`` (``features-quick.json`` for ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks._harness import measure, save

DATA = Path(__file__).parent / ".data"
START = datetime(2025, 9, 1, tzinfo=UTC)  # a Monday; fixed, so runs are comparable
PROJECT = Path(__file__).parents[1] / "src/propensity/datasets/projects/synthetic.yaml"

# ~40 of the synthetic example's 90 features: every kind, every window, filters, sessions, derived, attributes.
BENCH_FEATURES = (
    "page_views_today", "page_views_cal_2d", "page_views_cal_8d", "page_views_cal_15d", "page_views_cal_22d",
    "page_views_week2", "page_views_30d", "seconds_since_last_visit",
    "purchases_1d", "purchases_7d", "purchases_28d", "purchases_90d", "purchases_lifetime",
    "spend_7d", "spend_30d", "spend_90d", "avg_order_value_90d", "max_order_value_90d",
    "seconds_since_last_purchase", "refunds_90d",
    "product_views_7d", "cart_adds_7d", "checkouts_7d", "cart_adds_30d", "checkouts_30d", "purchases_30d",
    "distinct_skus_viewed_30d", "electronics_spend_90d", "fashion_beauty_purchases_90d",
    "campaigns_sent_30d", "campaign_opens_30d", "campaign_clicks_30d", "seconds_since_last_campaign",
    "seconds_since_last_billing", "renewals_lifetime",
    "sessions_7d", "session_page_views", "session_duration_seconds",
    "cart_add_rate_7d", "checkout_to_purchase_30d", "plan", "region", "consent_email",
)  # fmt: skip


def load_features(subset: bool) -> list[Any]:
    """The example project's features (all of them, or the ~40 of ``BENCH_FEATURES``)."""
    from propensity.config.spec import load_spec

    features = list(load_spec(PROJECT).features)
    if subset:
        features = [f for f in features if f.name in BENCH_FEATURES]
    return features


# ------------------------------------------------------------------------------------------------------ data


def dataset(customers: int, days: int) -> tuple[Path, dict[str, Any]]:
    """Generate (once) and load (once) the synthetic data; returns the DuckDB file and what it holds."""
    import duckdb

    from propensity.core.event import ATTRIBUTES_DDL, EVENTS_DDL
    from propensity.datasets.synthetic import generate

    folder = DATA / f"synthetic-{customers}c-{days}d"
    db = folder / "log-v2.duckdb"  # v2: signup_at as ISO 8601 text, as the ingester now stores it
    info_path = folder / "info-v2.json"
    if info_path.exists():
        return db, json.loads(info_path.read_text())
    t0 = time.perf_counter()
    if not (folder / "summary.json").exists():
        generate(folder, customers=customers, days=days, seed=0, start=START)
    generated = time.perf_counter() - t0
    db.unlink(missing_ok=True)
    con = duckdb.connect(str(db))
    con.execute("SET TimeZone='UTC'").fetchall()
    con.execute("SET enable_progress_bar = false").fetchall()
    con.execute(EVENTS_DDL).fetchall()
    con.execute(ATTRIBUTES_DDL).fetchall()
    parts = str(folder / "events" / "*.parquet")
    con.execute(
        f"""INSERT INTO events
        SELECT event_id, customer_id, event_type, event_time, available_at, amount, quantity, currency, sku,
               category, campaign_id, channel, plan, json_object('device', device, 'page', page),
               'events', available_at
        FROM read_parquet('{parts}')
        QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY available_at) = 1"""
    ).fetchall()
    attrs = ("signup_at", "region", "plan", "consent_email", "consent_ads")
    for a in attrs:
        # As the ingester stores them: timestamps as ISO 8601 UTC text (what days_since reads), the rest as text.
        text = (
            f"strftime(CAST({a} AS TIMESTAMPTZ), '%Y-%m-%dT%H:%M:%S.%fZ')"
            if a == "signup_at"
            else f"CAST({a} AS VARCHAR)"
        )
        con.execute(
            f"""INSERT INTO attributes SELECT customer_id, '{a}', {text}, valid_from, valid_from,
            'customers', valid_from FROM read_parquet('{folder / "customers.parquet"}')"""
        ).fetchall()
    (n_events, first, last) = con.execute(
        "SELECT count(*), min(event_time), max(event_time) FROM events"
    ).fetchall()[0]
    con.execute("CHECKPOINT").fetchall()
    con.close()
    info = {
        "customers": customers,
        "days": days,
        "events": int(n_events),
        "first_event": str(first),
        "last_event": str(last),
        "prepare_seconds": round(time.perf_counter() - t0, 1),
        "generate_seconds": round(generated, 1),
    }
    info_path.write_text(json.dumps(info, indent=2))
    return db, info


def ensure_subset(db: Path, fraction: float) -> str:
    """A table holding a fixed random ``fraction`` of the events (by hash of event_id); returns its name."""
    import duckdb

    if fraction >= 1.0:
        return "events"
    name = f"events_p{round(fraction * 1000):04d}"
    con = duckdb.connect(str(db))
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
    ).fetchall()[0][0]
    if not exists:
        con.execute(
            f"CREATE TABLE {name} AS SELECT * FROM events WHERE hash(event_id) % 1000000 < {int(fraction * 1e6)}"
        ).fetchall()
        con.execute("CHECKPOINT").fetchall()
    con.close()
    return name


# ---------------------------------------------------------------------------------------- offline (children)


def _spine(con: Any, cutoffs: int, end: datetime) -> Any:
    import pyarrow as pa

    ids = [r[0] for r in con.execute("SELECT DISTINCT customer_id FROM attributes ORDER BY 1").fetchall()]
    times = [end - timedelta(weeks=k) for k in range(cutoffs)]
    return pa.table(
        {
            "customer_id": pa.array([c for t in times for c in ids], pa.string()),
            "as_of": pa.array([t for t in times for _ in ids], pa.timestamp("us", tz="UTC")),
        }
    )


def offline_step(db: str, table: str, cutoffs: int, end: str, subset: bool, threads: int) -> None:
    """Child process: compute the spine with the offline engine; print timings as JSON."""
    import duckdb

    from propensity.features import FeaturePlan, compute_features

    con = duckdb.connect(db, read_only=True, config={"threads": threads})
    con.execute("SET TimeZone='UTC'").fetchall()
    con.execute("SET enable_progress_bar = false").fetchall()
    plan = FeaturePlan(load_features(subset))
    spine = _spine(con, cutoffs, datetime.fromisoformat(end))
    t0, c0 = time.perf_counter(), time.process_time()
    out = compute_features(con, plan, spine, events_table=table)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        json.dumps(
            {"seconds": seconds, "cpu_seconds": cpu, "rows": out.num_rows, "features": len(plan.names)}
        )
    )


FLOOR_WINDOWS = (7, 30, 90)


def floor_sql(spine: str, table: str) -> str:
    """One hand-written range join: 30 windowed aggregates (10 per window x 3 windows)."""
    aggs: list[str] = []
    for d in FLOOR_WINDOWS:
        w = f"e.event_time > s.as_of - INTERVAL {d} DAY"
        for t in ("page_view", "product_view", "cart_add", "checkout", "purchase", "campaign_sent"):
            aggs.append(f"count(*) FILTER (WHERE e.event_type = '{t}' AND {w}) AS {t}_{d}d")
        aggs.append(f"sum(e.amount) FILTER (WHERE e.event_type = 'purchase' AND {w}) AS spend_{d}d")
        aggs.append(f"max(e.amount) FILTER (WHERE e.event_type = 'purchase' AND {w}) AS max_{d}d")
        aggs.append(f"count(*) FILTER (WHERE {w}) AS events_{d}d")
        aggs.append(
            f"max(e.event_time) FILTER (WHERE e.event_type = 'purchase' AND {w}) AS last_purchase_{d}d"
        )
    return (
        f"SELECT s.customer_id, s.as_of, {', '.join(aggs)} FROM {spine} s LEFT JOIN {table} e "
        "ON e.customer_id = s.customer_id AND e.event_time <= s.as_of AND e.available_at <= s.as_of "
        f"AND e.event_time > s.as_of - INTERVAL {max(FLOOR_WINDOWS)} DAY GROUP BY s.customer_id, s.as_of"
    )


def floor_step(db: str, table: str, cutoffs: int, end: str, threads: int) -> None:
    """Child process: the hand-written floor query for the same spine."""
    import duckdb

    con = duckdb.connect(db, read_only=True, config={"threads": threads})
    con.execute("SET TimeZone='UTC'").fetchall()
    con.execute("SET enable_progress_bar = false").fetchall()
    spine = _spine(con, cutoffs, datetime.fromisoformat(end))
    con.register("bench_spine", spine)
    t0, c0 = time.perf_counter(), time.process_time()
    out = con.sql(floor_sql("bench_spine", table)).to_arrow_table()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "rows": out.num_rows, "features": 30}))


def explain_step(db: str, table: str, end: str, subset: bool, threads: int) -> None:
    """Child process: profile the engine's query for the one-cutoff spine (where time goes).

    Prints the EXPLAIN ANALYZE tree and the operators ranked by their own time (DuckDB's JSON profile).
    """
    import tempfile

    import duckdb
    import pyarrow as pa

    from propensity.features import FeaturePlan, feature_query

    con = duckdb.connect(db, read_only=True, config={"threads": threads})
    con.execute("SET TimeZone='UTC'").fetchall()
    con.execute("SET enable_progress_bar = false").fetchall()
    spine = _spine(con, 1, datetime.fromisoformat(end))
    inner = pa.table(
        {"_rid": pa.array(range(spine.num_rows), pa.int64()), "customer_id": spine["customer_id"],
         "as_of": spine["as_of"]}
    )  # fmt: skip
    con.register("spine", inner)
    sql = feature_query(FeaturePlan(load_features(subset)), "spine", events_table=table)
    tree = "\n".join(str(r[1]) for r in con.execute("EXPLAIN ANALYZE " + sql).fetchall())
    out = Path(tempfile.mkdtemp()) / "profile.json"
    con.execute("PRAGMA enable_profiling='json'").fetchall()
    con.execute(f"PRAGMA profiling_output='{out}'").fetchall()
    con.execute(sql).fetchall()
    con.execute("PRAGMA disable_profiling").fetchall()
    ops: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        name = node.get("type") or node.get("operator_type") or node.get("operator_name")
        if name:
            ops.append(
                {
                    "operator": str(name).strip(),
                    "seconds": float(node.get("timing") or node.get("operator_timing") or 0.0),
                    "rows": int(node.get("intermediate_rows") or node.get("operator_cardinality") or 0),
                    "info": json.dumps(node.get("extra_info") or {})[:160],
                }
            )
        for child in node.get("children", []):
            walk(child)

    profile = json.loads(out.read_text())
    for root in profile.get("operator", []) if isinstance(profile.get("operator"), list) else [profile]:
        walk(root)
    ops.sort(key=lambda o: -o["seconds"])
    print(json.dumps({"plan": tree, "top_operators": ops[:12]}))


def _child(code: str, timeout: float = 900) -> dict[str, Any]:
    m = measure(code, timeout=timeout)
    # The last JSON line (DuckDB may draw a progress bar on stdout before it).
    last = [ln for ln in m.output.splitlines() if ln.startswith("{")][-1]
    out: dict[str, Any] = json.loads(last)
    out["process_seconds"] = round(m.seconds, 2)
    out["peak_rss_mib"] = round(m.peak_rss_mib, 1)
    return out


def run_offline(
    db: Path, table: str, cutoffs: int, end: datetime, subset: bool, threads: int
) -> dict[str, Any]:
    code = (
        "from benchmarks.bench_features import offline_step\n"
        f"offline_step({str(db)!r}, {table!r}, {cutoffs}, {end.isoformat()!r}, {subset}, {threads})"
    )
    return _child(code)


def run_floor(db: Path, table: str, cutoffs: int, end: datetime, threads: int) -> dict[str, Any]:
    code = (
        "from benchmarks.bench_features import floor_step\n"
        f"floor_step({str(db)!r}, {table!r}, {cutoffs}, {end.isoformat()!r}, {threads})"
    )
    return _child(code)


# --------------------------------------------------------------------------------------------------- online


def online_step(db: str, max_events: int, reads: int, subset: bool) -> None:
    """Child process: apply events in available_at order in-process; time single vector reads; state size."""
    import gc
    import random

    import duckdb
    import pyarrow as pa

    from propensity.features import OnlineFeatureEngine

    con = duckdb.connect(db, read_only=True)
    con.execute("SET TimeZone='UTC'").fetchall()
    con.execute("SET enable_progress_bar = false").fetchall()
    features = load_features(subset)
    engine = OnlineFeatureEngine(features)
    # Attributes first (they are few and all valid from signup); then the events, newest customers included.
    con.execute(
        "SELECT customer_id, attribute, value, source, epoch_us(valid_from), epoch_us(available_at) "
        "FROM attributes ORDER BY 6"
    )
    for row in con.fetchall():
        engine.apply_attribute(dict(zip(("customer_id", "attribute", "value", "source", "valid_from",
                                         "available_at"), row, strict=True)))  # fmt: skip
    batches = []
    reader = con.sql(
        f"SELECT * FROM events ORDER BY available_at, event_id LIMIT {int(max_events)}"
    ).to_arrow_reader(100_000)
    for b in reader:
        batches.append(pa.Table.from_batches([b]))
    n = sum(b.num_rows for b in batches)
    # The cyclic collector's share of the apply, and a full collection right after it: the engine's state is
    # millions of small containers, and a full collection (which any later allocation may trigger) visits them
    # all; timed here so it is seen, and not charged to the single-event or read figures that follow.
    collector = {"seconds": 0.0, "collections": 0, "full": 0, "started": 0.0}

    def on_collect(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collector["started"] = time.process_time()
            return
        collector["seconds"] += time.process_time() - collector["started"]
        collector["collections"] += 1
        collector["full"] += info["generation"] == 2

    gc.callbacks.append(on_collect)
    t0, c0 = time.perf_counter(), time.process_time()
    for b in batches:
        engine.apply_batch(b)
    apply_s, apply_cpu = time.perf_counter() - t0, time.process_time() - c0
    gc.callbacks.remove(on_collect)
    t0, c0 = time.perf_counter(), time.process_time()
    gc.collect()
    full_gc_s, full_gc_cpu = time.perf_counter() - t0, time.process_time() - c0
    # One event at a time through apply() (the serving path), on the next events.
    tail = con.sql(
        f"SELECT * FROM events ORDER BY available_at, event_id LIMIT 20000 OFFSET {int(max_events)}"
    ).to_arrow_table()
    rows = tail.to_pylist()
    t0 = time.perf_counter()
    for ev in rows:
        engine.apply(ev)
    single_s = time.perf_counter() - t0
    last = max([r["available_at"] for r in rows]) if rows else None
    (watermark,) = con.execute("SELECT max(available_at) FROM events").fetchall()[0]
    as_of = max(x for x in (last, watermark) if x is not None) + timedelta(seconds=1)
    customers = [r[0] for r in con.execute("SELECT DISTINCT customer_id FROM attributes").fetchall()]
    rng = random.Random(0)
    picks = [rng.choice(customers) for _ in range(reads)]
    gc.collect()
    gc.disable()
    lat: list[float] = []
    vector = engine.vector
    clock = time.perf_counter_ns
    for c in picks:
        t1 = clock()
        vector(c, as_of)
        lat.append(clock() - t1)
    gc.enable()
    lat.sort()
    mem = engine.memory_bytes()
    print(
        json.dumps(
            {
                "events_applied": n,
                "apply_batch_seconds": apply_s,
                "apply_batch_events_per_second": n / apply_s,
                "apply_batch_cpu_seconds": apply_cpu,
                "apply_batch_events_per_cpu_second": n / apply_cpu,
                "apply_batch_gc_cpu_seconds": collector["seconds"],
                "apply_batch_gc_collections": collector["collections"],
                "apply_batch_gc_full_collections": collector["full"],
                "full_collection_after_apply_seconds": full_gc_s,
                "full_collection_after_apply_cpu_seconds": full_gc_cpu,
                "tracked_objects_after_apply": len(gc.get_objects()),
                "apply_single_events": len(rows),
                "apply_single_events_per_second": len(rows) / single_s if single_s else None,
                "reads": reads,
                "read_p50_us": lat[len(lat) // 2] / 1000,
                "read_p99_us": lat[int(len(lat) * 0.99)] / 1000,
                "read_p999_us": lat[int(len(lat) * 0.999)] / 1000,
                "customers_in_state": engine.customers,
                "state_bytes": mem,
                "state_bytes_per_customer": mem / max(engine.customers, 1),
                "features": len(features),
            }
        )
    )


def run_online(db: Path, events: int, reads: int) -> dict[str, Any]:
    """The online step in a fresh process, with its targets; prints a summary line."""
    online = _child(
        f"from benchmarks.bench_features import online_step\nonline_step({str(db)!r}, {events}, {reads}, True)",
        timeout=1800,
    )
    online["targets"] = {"events_per_second": 200_000, "read_p99_us": 50}
    online["met"] = {
        "events_per_second": online["apply_batch_events_per_second"] >= 200_000,
        "events_per_cpu_second": online["apply_batch_events_per_cpu_second"] >= 200_000,
        "read_p99_us": online["read_p99_us"] < 50,
    }
    print(
        f"  online: apply_batch {online['apply_batch_events_per_second']:,.0f} ev/s "
        f"({online['apply_batch_events_per_cpu_second']:,.0f} per CPU-second, of which collector "
        f"{online['apply_batch_gc_cpu_seconds']:.1f} s; a full collection after it "
        f"{online['full_collection_after_apply_cpu_seconds']:.1f} CPU-s), apply() "
        f"{online['apply_single_events_per_second'] or 0:,.0f} ev/s; read p50 {online['read_p50_us']:.1f} µs "
        f"p99 {online['read_p99_us']:.1f} µs; {online['state_bytes_per_customer']:,.0f} B/customer "
        f"(peak RSS {online['peak_rss_mib']:,.0f} MiB)"
    )
    return online


# ----------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=50)
    parser.add_argument(
        "--events",
        default="1000000,3000000",
        help="comma-separated smaller event counts for the scaling series (subsets of the full log)",
    )
    parser.add_argument("--cutoffs", type=int, default=10, help="weekly cutoffs of the training spine")
    parser.add_argument("--online-events", type=int, default=2_000_000, help="events applied online")
    parser.add_argument("--reads", type=int, default=100_000, help="single vector reads timed")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--all-features", action="store_true", help="also time the full example feature set")
    parser.add_argument("--explain", action="store_true", help="save EXPLAIN ANALYZE of the 200k-row query")
    parser.add_argument("--quick", action="store_true", help="smoke run: 4k customers x 21 days")
    parser.add_argument(
        "--online-only",
        action="store_true",
        help="only the online engine (apply and reads); results to features-online.json",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.customers, args.days, args.events = 4_000, 21, "30000"
        args.online_events, args.reads, args.cutoffs = 30_000, 5_000, 3

    load = [round(x, 2) for x in os.getloadavg()]
    db, info = dataset(args.customers, args.days)
    end = START + timedelta(days=args.days)
    total = info["events"]
    result: dict[str, Any] = {"data": info, "load_average_before": load, "threads": args.threads,
                              "features_benchmarked": len(load_features(True))}  # fmt: skip
    print(f"data: {total:,} events, {args.customers:,} customers x {args.days} days (load {load})")

    if args.online_only:
        result["online"] = run_online(db, args.online_events, args.reads)
        result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        path = save("features-online-quick" if args.quick else "features-online", result)
        print(f"written to {path}")
        return result

    def report(label: str, r: dict[str, Any]) -> None:
        print(f"  {label:<44} {r['seconds']:7.2f} s, CPU {r.get('cpu_seconds', 0):.1f} s (process "
              f"{r['process_seconds']:.1f} s, peak RSS "
              f"{r['peak_rss_mib']:,.0f} MiB, {r['rows']:,} rows x {r['features']})")  # fmt: skip

    floor = run_floor(db, "events", 1, end, args.threads)
    report("floor: hand-written range join, 30 aggs", floor)
    one = run_offline(db, "events", 1, end, True, args.threads)
    report("engine: 1 cutoff", one)
    train = run_offline(db, "events", args.cutoffs, end, True, args.threads)
    report(f"engine: {args.cutoffs} weekly cutoffs", train)
    result["offline"] = {
        "floor_1_cutoff": floor,
        "engine_1_cutoff": one,
        "engine_training_spine": train,
        "ratio_to_floor_1_cutoff": round(one["seconds"] / floor["seconds"], 2),
        "targets": {"1_cutoff_s": 5.0, "training_spine_s": 30.0, "peak_rss_mib": 4096},
        "met": {
            "1_cutoff": one["seconds"] < 5.0,
            "training_spine": train["seconds"] < 30.0,
            "peak_rss": max(one["peak_rss_mib"], train["peak_rss_mib"]) < 4096,
        },
    }
    print(f"  engine / floor = {result['offline']['ratio_to_floor_1_cutoff']}")
    if args.all_features:
        full = run_offline(db, "events", 1, end, False, args.threads)
        report("engine: 1 cutoff, all example features", full)
        result["offline"]["engine_1_cutoff_all_features"] = full

    scaling: list[dict[str, Any]] = []
    for n in [int(x) for x in args.events.split(",") if x] + [total]:
        table = ensure_subset(db, min(n / total, 1.0))
        r_floor = run_floor(db, table, 1, end, args.threads)
        r_engine = run_offline(db, table, 1, end, True, args.threads)
        row = {"events_target": n, "table": table, "engine_seconds": r_engine["seconds"],
               "floor_seconds": r_floor["seconds"], "engine_peak_rss_mib": r_engine["peak_rss_mib"],
               "ratio": round(r_engine["seconds"] / r_floor["seconds"], 2)}  # fmt: skip
        scaling.append(row)
        print(f"  events ~{n:>11,}: engine {row['engine_seconds']:.2f} s, floor {row['floor_seconds']:.2f} s")
    result["offline"]["scaling_with_events"] = scaling
    spine_scaling = [{"cutoffs": 1, "rows": one["rows"], "seconds": one["seconds"]}]
    for k in sorted({max(2, args.cutoffs // 2)}):
        r = run_offline(db, "events", k, end, True, args.threads)
        spine_scaling.append({"cutoffs": k, "rows": r["rows"], "seconds": r["seconds"]})
    spine_scaling.append({"cutoffs": args.cutoffs, "rows": train["rows"], "seconds": train["seconds"]})
    result["offline"]["scaling_with_spine_rows"] = spine_scaling
    for s in spine_scaling:
        print(f"  spine {s['rows']:>10,} rows: {s['seconds']:.2f} s")

    if args.explain:
        plan = _child(
            "from benchmarks.bench_features import explain_step\n"
            f"explain_step({str(db)!r}, 'events', {end.isoformat()!r}, True, {args.threads})"
        )
        path = Path(__file__).parent / "results" / "features_explain.txt"
        path.write_text(plan["plan"])
        result["offline"]["explain_analyze"] = str(path)
        result["offline"]["top_operators"] = plan["top_operators"]
        for op in plan["top_operators"][:6]:
            print(f"    {op['seconds']:6.2f} s  {op['rows']:>12,} rows  {op['operator']}  {op['info'][:70]}")

    result["online"] = run_online(db, args.online_events, args.reads)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    path = save("features-quick" if args.quick else "features", result)
    print(f"written to {path}")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
