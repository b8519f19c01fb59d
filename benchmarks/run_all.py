"""Run every benchmark in turn, each in its own process, and say which ones finished.

``make bench`` runs this. Each benchmark writes its own JSON under ``benchmarks/results/``; this runner only orders
them, passes the arguments for the chosen size and prints how long each took. ``--quick`` runs every benchmark at a
small size (minutes in all: a smoke run that the figures are produced, not figures of record).

    python -m benchmarks.run_all                 # figures of record (hours on a 2-core machine)
    python -m benchmarks.run_all --quick         # smoke run
    python -m benchmarks.run_all --only scoring http
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

# (name, arguments of record, arguments for --quick). Order: cheap and self-contained first.
BENCHMARKS: list[tuple[str, list[str], list[str]]] = [
    ("scoring", [], ["--quick"]),
    ("http", [], ["--customers", "2000", "--seconds", "3"]),
    ("ingest", [], ["--events", "500000"]),
    ("export", [], ["--quick"]),
    ("features", [], ["--customers", "5000", "--days", "20", "--online-events", "100000", "--reads", "5000"]),
    ("events", [], ["--batches", "10", "--customers", "2000", "--probes", "50", "--stream-events", "20000"]),
    ("restart", [], ["--customers", "500", "--days", "30", "--tail", "1000"]),
    ("training", [], ["--customers", "3000", "--days", "120"]),
    ("batch_scoring", [], ["--customers", "20000", "--train-customers", "3000"]),
    ("spark", [], ["--quick"]),
    ("console", [], ["--customers", "2000", "--runs", "2"]),
    ("quality", [], []),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="every benchmark at a small size (a smoke run)")
    parser.add_argument(
        "--only", nargs="*", metavar="NAME", help=f"run these: {', '.join(b[0] for b in BENCHMARKS)}"
    )
    args = parser.parse_args(argv)
    known = {name for name, _, _ in BENCHMARKS}
    unknown = sorted(set(args.only or []) - known)
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    chosen = [b for b in BENCHMARKS if not args.only or b[0] in args.only]
    if args.quick:
        chosen = [b for b in chosen if b[0] != "quality"]  # real data at full size or not at all
    env = dict(os.environ)
    if args.quick:  # smoke figures must not overwrite the figures of record
        env["PROPENSITY_BENCH_RESULTS"] = tempfile.mkdtemp(prefix="propensity-bench-quick-")
        print(f"quick run: results go to {env['PROPENSITY_BENCH_RESULTS']}")
    outcomes: list[tuple[str, int, float]] = []
    for name, full, quick in chosen:
        command = [sys.executable, "-m", f"benchmarks.bench_{name}", *(quick if args.quick else full)]
        print(f"\n=== bench_{name}: {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        code = subprocess.call(command, env=env)
        outcomes.append((name, code, time.perf_counter() - started))
    print("\nbenchmark        status   seconds")
    for name, code, seconds in outcomes:
        print(f"{name:<16} {'ok' if code == 0 else f'exit {code}':<8} {seconds:8.1f}")
    return 0 if all(code == 0 for _, code, _ in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
