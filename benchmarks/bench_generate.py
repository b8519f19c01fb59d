"""Benchmark the synthetic generator: wall time, events per second and peak memory.

    python -m benchmarks.bench_generate --customers 1000000 --days 90

Prints the figures and writes them (with the machine) to ``benchmarks/results/generate.json``. The data goes to a temporary folder
(removed afterwards) unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks._harness import save
from propensity.datasets.synthetic import generate

START = datetime(2025, 9, 1, tzinfo=UTC)  # fixed, so runs are comparable


def _peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _folder_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / (1024 * 1024)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=None, help="keep the data here instead of a temporary folder"
    )
    args = parser.parse_args(argv)

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-generate-"))
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    summary = generate(out, customers=args.customers, days=args.days, seed=args.seed, start=START)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result: dict[str, object] = {
        "customers": args.customers,
        "days": args.days,
        "seed": args.seed,
        "events": summary.events,
        "duplicates": summary.duplicates,
        "late_events": summary.late_events,
        "oracle_cutoffs": len(summary.cutoffs),
        "seconds": round(wall, 2),
        "events_per_second": round(summary.events / wall),
        # CPU time is less sensitive than wall time to other processes sharing the machine; the load averages
        # say how busy it was (on 2 cores, a load above ~1 before the run means the figures are pessimistic).
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "output_mib": round(_folder_mib(out), 1),
    }
    if args.out is None:
        shutil.rmtree(out, ignore_errors=True)
    path = save("generate", result)
    print(
        f"generate {args.customers:,} customers × {args.days} days: {summary.events:,} events in {wall:.1f} s "
        f"= {summary.events / wall:,.0f} events/s ({result['cpu_seconds']} CPU s, load {load_before:.1f}); peak RSS {result['peak_rss_mib']} MiB; "
        f"output {result['output_mib']} MiB; written to {path}"
    )
    return result


if __name__ == "__main__":
    main()
