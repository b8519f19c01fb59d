"""Ingest N synthetic events from Parquet into a fresh event log (issue target: ≥ 1M events/s, RSS < 2 GiB).

The floor, measured in the same run on the same files, is DuckDB copying the Parquet files into a table with no
validation, mapping or dedupe (``CREATE TABLE AS SELECT * FROM read_parquet``): our figure is reported as a
ratio to it, since this machine's absolute speed varies between runs.

    python -m benchmarks.bench_ingest --events 10000000
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks._harness import measure, save

DATA = Path(__file__).parent / ".data"


def synthetic_files(events: int, seed: int = 1) -> list[Path]:
    """Generate (once, cached) a synthetic data set with about ``events`` events; return its parquet parts."""
    from propensity.datasets.synthetic import generate

    # ~1M customers x 90 days gives tens of millions of events; scale customers to the requested size.
    target = DATA / f"synthetic-{events}"
    parts = sorted((target / "events").glob("*.parquet"))
    if not parts:
        probe = generate(Path(tempfile.mkdtemp()) / "probe", customers=2000, days=90, seed=seed)
        per_customer = probe.events / probe.customers
        customers = max(1000, int(events / per_customer))
        generate(target, customers=customers, days=90, seed=seed)
        parts = sorted((target / "events").glob("*.parquet"))
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--files", nargs="*", type=Path, help="Ingest these Parquet files instead.")
    args = parser.parse_args()
    parts = args.files or synthetic_files(args.events)
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    load_before = [round(x, 2) for x in os.getloadavg()]
    files = ", ".join(repr(str(p)) for p in parts)
    try:
        floor = measure(
            "import duckdb\n"
            f"con = duckdb.connect({str(work / 'floor.duckdb')!r}); con.execute(\"SET memory_limit='1GB'\")\n"
            f'con.execute("CREATE TABLE t AS SELECT * FROM read_parquet([{files}])").fetchall()\n'
        )
        ours = measure(
            "from propensity.workspace import Workspace\n"
            "from propensity.events.ingest import ingest_files\n"
            f"r = ingest_files(Workspace.open({str(work / 'ws')!r}), [{files}])\n"
            "print('@@', r.accepted, r.duplicates, r.quarantined)\n"
        )
        reingest = measure(
            "from propensity.workspace import Workspace\n"
            "from propensity.events.ingest import ingest_files\n"
            f"r = ingest_files(Workspace.open({str(work / 'ws')!r}), [{files}], force=True)\n"
            "print('@@', r.accepted, r.duplicates, r.quarantined)\n"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # The counts follow the last "@@" (DuckDB may draw a progress bar on the same stream).
    accepted, duplicates, quarantined = (int(x) for x in ours.output.rsplit("@@", 1)[1].split())
    result = {
        "rows": rows,
        "files": len(parts),
        "accepted": accepted,
        "duplicates": duplicates,
        "quarantined": quarantined,
        "ingest_seconds": round(ours.seconds, 2),
        "ingest_events_per_s": round(rows / ours.seconds),
        "ingest_peak_rss_mib": round(ours.peak_rss_mib),
        "reingest_seconds": round(reingest.seconds, 2),
        "reingest_events_per_s": round(rows / reingest.seconds),
        "floor_seconds": round(floor.seconds, 2),
        "floor_events_per_s": round(rows / floor.seconds),
        "floor_peak_rss_mib": round(floor.peak_rss_mib),
        "ratio_to_floor": round(ours.seconds / floor.seconds, 2),
        # CPU time of each child (all its threads): on a shared machine the fairer comparison.
        "ingest_cpu_seconds": round(ours.cpu_seconds, 2),
        "floor_cpu_seconds": round(floor.cpu_seconds, 2),
        "ratio_to_floor_cpu": round(ours.cpu_seconds / floor.cpu_seconds, 2),
        "load_average_before": load_before,
    }
    path = save("ingest", result)
    for key, value in result.items():
        print(f"{key:>24}: {value:,}" if isinstance(value, int) else f"{key:>24}: {value}")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
