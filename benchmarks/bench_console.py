"""Console pages on the quickstart workspace (issue 17 target: every page loads in under a second).

A real ``propensity console`` over a quickstart workspace (10,000 customers, 180 days, five actions, a scoring run
of 50,000 rows, published), signed in from a headless Chromium (Debian's, through Playwright). Each page is
loaded ``--runs`` times; a load is the time from navigation to the page's data drawn (``body[data-ready]``: the
shell, the scripts, the data endpoint, the tables and charts). The floor, measured in the same rounds, is the
sign-in page: the same server and browser, a static page, no data. The first load of each page is reported
apart (it fills caches: the matured run's outcomes on the targeting page).

    python -m benchmarks.bench_console                      # builds benchmarks/.data/console-qs-* once (minutes)
    python -m benchmarks.bench_console --workspace /tmp/qs --runs 3
    python -m benchmarks.bench_console --customers 2000 --runs 2   # a smoke run (make bench-quick)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks._harness import save

KEY = "bench-admin-key"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]  # fmt: skip


def _workspace(path: Path | None, customers: int, days: int) -> Path:
    """The given workspace, or a quickstart one of this size (built once), with one monitor run stored so the
    monitoring page has something to draw."""
    if path is not None:
        return path
    root = Path(__file__).parent / ".data" / f"console-qs-{customers}-{days}"
    if not (root / ".propensity" / "models" / "registry.json").exists():
        subprocess.run([sys.executable, "-m", "propensity", "quickstart", "-w", str(root), "--no-serve",
                        "--customers", str(customers), "--days", str(days)], check=True)  # fmt: skip
        # Exit code 1 means an alert fired; the run is stored either way.
        subprocess.run([sys.executable, "-m", "propensity", "monitor", "-w", str(root)], check=False)
    return root


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/healthz", timeout=2):
                return
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    raise SystemExit(f"the console at {base} did not start")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--customers", type=int, default=10_000, help="quickstart size (without --workspace)")
    parser.add_argument("--days", type=int, default=180, help="quickstart history (without --workspace)")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    ws = _workspace(args.workspace, args.customers, args.days)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    load_before = os.getloadavg()
    env = {**os.environ, "PROPENSITY_API_KEYS": f"bench:admin+console+customers:{KEY}"}
    proc = subprocess.Popen([sys.executable, "-m", "propensity", "console", "-w", str(ws), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    chromium = shutil.which("chromium") or shutil.which("chromium-headless-shell")
    if chromium is None:
        raise SystemExit("no chromium: `make browser` installs Debian's")
    from propensity.registry.registry import Registry
    from propensity.workspace import Workspace

    production = Registry(Workspace.open(ws)).production()
    pages = {"overview": "/console", "targeting": "/console/targeting", "models": "/console/models",
             "model": f"/console/models/{production}", "monitoring": "/console/monitoring",
             "experiments": "/console/experiments", "customers": "/console/customers"}  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in ["floor (sign-in page)", *pages]}
    first: dict[str, float] = {}
    profile = tempfile.mkdtemp(prefix="bench-console-")
    try:
        _wait(base, proc)
        with sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                profile, executable_path=chromium, headless=True, args=FLAGS
            )
            page = ctx.new_page()
            page.goto(f"{base}/console/login")
            page.fill("#key", KEY)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/console")
            for run in range(args.runs + 1):
                for name, path in pages.items():
                    t0 = time.perf_counter()
                    page.goto(base + path)
                    page.wait_for_selector("body[data-ready]", timeout=60_000)
                    took = time.perf_counter() - t0
                    if run == 0:
                        first[name] = took
                    else:
                        times[name].append(took)
                if run:
                    t0 = time.perf_counter()
                    page.goto(f"{base}/console/login")  # the form (static HTML, the same CSS)
                    page.wait_for_selector("#key, body[data-ready]")
                    times["floor (sign-in page)"].append(time.perf_counter() - t0)
            ctx.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(profile, ignore_errors=True)
    floor = statistics.median(times["floor (sign-in page)"])
    result = {
        "workspace": str(ws),
        "runs": args.runs,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "target_s": 1.0,
        "pages": {
            name: {
                "median_s": round(statistics.median(v), 3),
                "max_s": round(max(v), 3),
                "first_s": round(first[name], 3) if name in first else None,
                "over_floor": round(statistics.median(v) / floor, 1) if floor else None,
                "meets_target": statistics.median(v) < 1.0,
            }
            for name, v in times.items()
        },
    }
    save("console", result)
    for name, r in result["pages"].items():
        print(f"{name:24s} median {r['median_s']:.3f} s  max {r['max_s']:.3f} s  first {r['first_s']}  "
              f"x{r['over_floor']} floor")  # fmt: skip
    print(f"load average before {load_before[0]:.1f}, after {result['load_after'][0]:.1f}")
    return result


if __name__ == "__main__":
    main()
