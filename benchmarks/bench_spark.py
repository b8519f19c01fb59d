"""Benchmark the Spark engine against DuckDB on the same data, in the same run.

    python -m benchmarks.bench_spark                          # 10M events x 200k spine rows, 43 features
    python -m benchmarks.bench_spark --quick                  # smoke run: 4k customers x 21 days
    python -m benchmarks.bench_spark --fractions 0.1,1.0      # growth: 1M and 10M events (same spine)
    python -m benchmarks.bench_spark --customers 1000000 --days 50 --fractions 1.0   # ~50M events (run late)

Issue 13's acceptance: 10M events x 200k spine rows, 43 features (``bench_features.BENCH_FEATURES``), on Spark
``local[2]`` against DuckDB (2 threads) in the same run: both times, the ratio, peak memory; and how the Spark
time grows with events (1M, 10M, 50M). The data is the synthetic generator's, cached under
``benchmarks/.data/`` by :func:`benchmarks.bench_features.dataset` (a DuckDB log); this benchmark exports it
once into a Parquet event store beside it (``propensity events export`` does the same), which Spark reads.

Each step runs in a fresh process. DuckDB's peak is the process's RSS; Spark's is the driver process plus the
JVM it starts (sampled every 0.2 s with psutil), so both include everything the engine needed. The spine is one
cutoff per customer (200k rows at full size). Results go to ``benchmarks/results/spark.json``
(``spark-quick.json`` for ``--quick``), with the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import measure, save
from benchmarks.bench_features import dataset, ensure_subset


def parquet_store(db: Path, table: str) -> str:
    """The events of ``table`` (and every attribute) as a committed Parquet event store; exported once."""
    import duckdb

    from propensity.events.parquet_log import ParquetEventLog, export_to_parquet

    folder = db.parent / f"parquet-{table}"
    store = ParquetEventLog(folder, db.parent / f"state-{table}.duckdb")
    if store.manifest().version:
        return str(folder)
    # export_to_parquet copies the tables named events/attributes: give it a file holding exactly those.
    tmp = db.parent / f"export-{table}.duckdb"
    tmp.unlink(missing_ok=True)
    con = duckdb.connect(str(tmp))
    con.execute(f"ATTACH '{db}' AS src (READ_ONLY)").fetchall()
    con.execute(f"CREATE TABLE events AS SELECT * FROM src.{table}").fetchall()
    con.execute("CREATE TABLE attributes AS SELECT * FROM src.attributes").fetchall()
    con.close()
    export_to_parquet(tmp, store)
    tmp.unlink(missing_ok=True)
    return str(folder)


def _spine_code(db: str) -> str:
    return (
        "import duckdb, pyarrow as pa\n"
        "from datetime import datetime\n"
        f"c = duckdb.connect({db!r}, read_only=True)\n"
        "ids = [r[0] for r in c.execute('SELECT DISTINCT customer_id FROM attributes ORDER BY 1').fetchall()]\n"
        "end = c.execute('SELECT max(event_time) FROM events').fetchall()[0][0]\n"
        "c.close()\n"
        "spine = pa.table({'customer_id': pa.array(ids, pa.string()),\n"
        "                  'as_of': pa.array([end] * len(ids), pa.timestamp('us', tz='UTC'))})\n"
    )


def duckdb_step(db: str, table: str, threads: int) -> dict[str, Any]:
    code = (
        _spine_code(db)
        + "import json, time\n"
        + "from benchmarks.bench_features import load_features\n"
        + "from propensity.features import FeaturePlan, compute_features\n"
        + f"con = duckdb.connect({db!r}, read_only=True, config={{'threads': {threads}}})\n"
        + "con.execute(\"SET TimeZone='UTC'\").fetchall()\n"
        + "plan = FeaturePlan(load_features(True))\n"
        + "t0 = time.perf_counter()\n"
        + f"out = compute_features(con, plan, spine, events_table={table!r})\n"
        + "print(json.dumps({'seconds': time.perf_counter() - t0, 'rows': out.num_rows, 'features': len(plan.names)}))\n"
    )
    m = measure(code, timeout=3600)
    return {**json.loads(m.output.strip().splitlines()[-1]), "peak_rss_mib": round(m.peak_rss_mib, 1)}


def spark_step(db: str, store: str, master: str, driver_memory: str) -> dict[str, Any]:
    code = (
        _spine_code(db)
        + "import json, threading, time, psutil\n"
        + "from benchmarks.bench_features import load_features\n"
        + "from propensity.events.parquet_log import ParquetEventLog\n"
        + "from propensity.events.spark import spark_session\n"
        + "from propensity.features import FeaturePlan\n"
        + "from propensity.features.spark import compute_features_spark\n"
        + "peak = [0]\n"
        + "def sample():\n"
        + "    me = psutil.Process()\n"
        + "    while True:\n"
        + "        try:\n"
        + "            rss = me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True))\n"
        + "            peak[0] = max(peak[0], rss)\n"
        + "        except psutil.Error:\n"
        + "            pass\n"
        + "        time.sleep(0.2)\n"
        + "threading.Thread(target=sample, daemon=True).start()\n"
        + "t_start = time.perf_counter()\n"
        + f"spark = spark_session({master!r}, {{'spark.driver.memory': {driver_memory!r}, "
        + "'spark.sql.shuffle.partitions': '8'})\n"
        + "started = time.perf_counter() - t_start\n"
        + f"events, attributes = ParquetEventLog({store!r}, '/nonexistent').spark_frames(spark)\n"
        + "plan = FeaturePlan(load_features(True))\n"
        + "t0 = time.perf_counter()\n"
        + "out = compute_features_spark(spark, plan, spine, events=events, attributes=attributes)\n"
        + "seconds = time.perf_counter() - t0\n"
        + "print(json.dumps({'seconds': seconds, 'session_start_seconds': started, 'rows': out.num_rows,\n"
        + "                  'features': len(plan.names), 'peak_rss_mib_driver_and_jvm': peak[0] / 2**20}))\n"
        + "spark.stop()\n"
    )
    m = measure(code, timeout=3600)
    return json.loads(m.output.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=50)
    parser.add_argument("--fractions", default="1.0", help="event subsets to run (1.0: all; 0.1: a tenth)")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="2g")
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads")
    parser.add_argument("--quick", action="store_true", help="smoke run: 4k customers x 21 days")
    args = parser.parse_args(argv)
    if args.quick:
        args.customers, args.days = 4_000, 21
    load_before = os.getloadavg()
    db, info = dataset(args.customers, args.days)
    runs = []
    for fraction in [float(x) for x in args.fractions.split(",")]:
        table = ensure_subset(db, fraction)
        store = parquet_store(db, table)
        import duckdb

        con = duckdb.connect(str(db), read_only=True)
        events = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        con.close()
        duck = duckdb_step(str(db), table, args.threads)
        spark = spark_step(str(db), store, args.master, args.driver_memory)
        run = {
            "fraction": fraction,
            "events": int(events),
            "spine_rows": duck["rows"],
            "features": duck["features"],
            "duckdb": duck,
            "spark": spark,
            "spark_over_duckdb": round(spark["seconds"] / duck["seconds"], 2),
        }
        runs.append(run)
        print(json.dumps(run))
    result = {
        "data": info,
        "master": args.master,
        "runs": runs,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "recorded_unix": time.time(),
    }
    save("spark-quick" if args.quick else "spark", result)
    return result


if __name__ == "__main__":
    main()
