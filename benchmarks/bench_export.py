"""File-drop export throughput (issue target: ≥ 1M rows/s).

Builds a scoring run of ``--customers`` customers × 5 actions of canonical score rows (SCORE_ROW_SCHEMA, the
columns a real run carries, JSON reason codes included), then publishes it through the file destination
(:class:`~propensity.activation.destinations.files.FileDrop`: write the file, SHA-256 it, write the manifest,
rename into place) once per format, best of ``--repeat``. Reported per format: rows/s of the whole publish and of
the write alone, the file size, and CPU seconds next to wall (the machine is shared: compare ratios within one
run). The floor of each format, in the same run: DuckDB's own writer (``COPY ... TO`` with ``FORMAT json``,
``csv`` or ``parquet``, zstd) writing the same rows from the same Arrow table on every core, best of ``--repeat``.

    python -m benchmarks.bench_export             # 2M customers x 5 actions = 10M rows
    python -m benchmarks.bench_export --quick     # 200k rows
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from benchmarks._harness import save

ACTIONS = ("buy_7d", "upgrade_30d", "renew_30d", "respond_7d", "churn_30d")


def build_rows(customers: int, seed: int = 0) -> pa.Table:
    """``customers`` × 5 actions of score rows, vectorised (no Python loop per row)."""
    from propensity.core.score_row import SCORE_ROW_SCHEMA

    rng = np.random.default_rng(seed)
    n = customers * len(ACTIONS)
    ids = pa.array(np.char.add("c", np.arange(customers).astype(str)))
    customer_id = pa.concat_arrays([ids] * len(ACTIONS))
    action = pa.DictionaryArray.from_arrays(
        np.repeat(np.arange(len(ACTIONS), dtype=np.int32), customers), pa.array(ACTIONS)
    ).cast(pa.string())
    score = rng.beta(2, 5, n)
    eligible = rng.random(n) > 0.1
    pct = np.floor(score * 100.0)
    segment = np.where(pct >= 80, "high", np.where(pct >= 40, "medium", "low"))
    now = datetime.now(UTC).replace(microsecond=0)
    reasons = pa.array(['[{"feature":"pv_7d","value":3,"contribution":0.41}]'] * 64).take(
        pa.array(rng.integers(0, 64, n))
    )

    def const(value: Any, typ: pa.DataType) -> pa.Array:
        return pa.repeat(pa.scalar(value, typ), n)  # type: ignore[attr-defined]

    columns = {
        "customer_id": customer_id,
        "action": action,
        "score": pa.array(score, mask=~eligible),
        "percentile": pa.array(pct, mask=~eligible),
        "segment": pa.array(segment, mask=~eligible),
        "eligible": pa.array(eligible),
        "next_best_action": const("buy_7d", pa.string()),
        "reason_codes": reasons,
        "holdout_group": const("treatment", pa.string()),
        "model_id": const("m-0123456789abcdef", pa.string()),
        "model_version": const("m-0123456789abcdef", pa.string()),
        "feature_set_version": const("fs-0123456789", pa.string()),
        "scoring_run_id": const("r-bench", pa.string()),
        "scored_at": const(now, SCORE_ROW_SCHEMA.field("scored_at").type),
        "expiration_at": const(now + timedelta(days=1), SCORE_ROW_SCHEMA.field("expiration_at").type),
        "decision_policy": const("ev_lower", pa.string()),
        "consent": const('{"email": true, "ads": false}', pa.string()),
        "fallback": const(False, pa.bool_()),
        "as_of": const(now, SCORE_ROW_SCHEMA.field("as_of").type),
        "trigger_id": pa.nulls(len(customer_id), pa.string()),
    }
    return pa.table(columns, schema=SCORE_ROW_SCHEMA)


def bench_format(rows: pa.Table, fmt: str, repeat: int, folder: Path) -> dict[str, Any]:
    from propensity.activation.destinations.base import PublishRun
    from propensity.activation.destinations.files import FileDrop, write_table
    from propensity.config.destinations import FileDestination

    run = PublishRun.from_rows(rows, contract_version="1.0.0")
    publish_s, publish_cpu, write_s = [], [], []
    size = 0
    for i in range(repeat):
        target = folder / f"{fmt}-{i}"
        drop = FileDrop(FileDestination(name="bench", format=fmt), target)  # type: ignore[arg-type]
        t0, c0 = time.perf_counter(), time.process_time()
        report = drop.publish(run, rows)
        publish_s.append(time.perf_counter() - t0)
        publish_cpu.append(time.process_time() - c0)
        assert report.status == "delivered" and report.sent == rows.num_rows
        data = drop.drop_dir(run.run_id) / f"scores.{fmt}"
        size = data.stat().st_size
        t0 = time.perf_counter()
        write_table(rows, target / "write-only", fmt)
        write_s.append(time.perf_counter() - t0)
        shutil.rmtree(target)
    best = min(publish_s)
    floor = min(duckdb_copy(rows, fmt, folder / f"floor.{fmt}") for _ in range(repeat))
    return {
        "rows": rows.num_rows,
        "publish_seconds": round(best, 3),
        "publish_rows_per_s": round(rows.num_rows / best),
        "publish_cpu_seconds": round(publish_cpu[publish_s.index(best)], 3),
        "write_seconds": round(min(write_s), 3),
        "write_rows_per_s": round(rows.num_rows / min(write_s)),
        "file_mib": round(size / 2**20, 1),
        "floor_duckdb_copy_seconds": round(floor, 3),
        "floor_rows_per_s": round(rows.num_rows / floor),
        "ratio_to_floor": round(best / floor, 2),
        "meets_1m_rows_per_s": rows.num_rows / best >= 1_000_000,
    }


def duckdb_copy(rows: pa.Table, fmt: str, path: Path) -> float:
    """Seconds DuckDB's own writer takes to write ``rows`` as ``fmt`` (the floor)."""
    import duckdb

    options = {
        "jsonl": "FORMAT json",
        "csv": "FORMAT csv, HEADER",
        "parquet": "FORMAT parquet, COMPRESSION zstd",
    }
    con = duckdb.connect()
    con.register("_rows", rows)
    t0 = time.perf_counter()
    con.execute(f"COPY _rows TO '{path}' ({options[fmt]})")
    seconds = time.perf_counter() - t0
    con.close()
    path.unlink()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--formats", default="parquet,csv,jsonl")
    parser.add_argument("--quick", action="store_true", help="40k customers (200k rows), one repeat")
    args = parser.parse_args()
    customers, repeat = (40_000, 1) if args.quick else (args.customers, args.repeat)
    t0 = time.perf_counter()
    rows = build_rows(customers)
    print(f"built {rows.num_rows:,} rows in {time.perf_counter() - t0:.1f}s ({rows.nbytes / 2**20:.0f} MiB)")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        for fmt in args.formats.split(","):
            results[fmt] = bench_format(rows, fmt, repeat, Path(tmp))
            r = results[fmt]
            print(
                f"{fmt:8s} publish {r['publish_rows_per_s']:>12,} rows/s ({r['publish_seconds']}s wall, "
                f"{r['publish_cpu_seconds']}s CPU)  write only {r['write_rows_per_s']:>12,} rows/s  "
                f"{r['file_mib']} MiB  floor (DuckDB COPY) {r['floor_rows_per_s']:>12,} rows/s"
            )
    import os

    name = "export-quick" if args.quick else "export"
    path = save(name, {"customers": customers, "rows": rows.num_rows, "repeat": repeat,
                       "load_average": os.getloadavg(), "formats": results})  # fmt: skip
    print(f"saved {path}")


if __name__ == "__main__":
    main()
