"""Small helpers shared by the benchmarks: run a step in a child process and measure its time and peak RSS."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

# Figures of record go to benchmarks/results/; a smoke run (run_all --quick) points this elsewhere.
RESULTS = Path(os.environ.get("PROPENSITY_BENCH_RESULTS") or Path(__file__).parent / "results")


@dataclass(frozen=True)
class Measurement:
    seconds: float
    peak_rss_mib: float
    output: str
    cpu_seconds: float = 0.0  # user + system CPU of the child (all its threads): what load does not inflate


def measure(code: str, *, timeout: float = 1800) -> Measurement:
    """Run Python ``code`` in a fresh interpreter; return wall time and the child's peak RSS.

    A fresh process per step keeps one step's memory from counting against the next.
    """
    wrapper = (
        "import resource, time, sys\n"
        "t0 = time.perf_counter()\n"
        f"{code}\n"
        "_ru = resource.getrusage(resource.RUSAGE_SELF)\n"
        "sys.stderr.write(f'@@ {time.perf_counter() - t0} {_ru.ru_maxrss} {_ru.ru_utime + _ru.ru_stime}\\n')\n"
    )
    proc = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark step failed:\n{proc.stderr[-4000:]}")
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("@@ ")][-1]
    _, seconds, rss_kib, cpu = line.split()
    return Measurement(float(seconds), int(rss_kib) / 1024, proc.stdout, float(cpu))


def machine() -> dict[str, object]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        # Load when the result is saved: on a shared machine, the context every figure needs.
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def save(name: str, result: dict[str, object]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "machine": machine(), "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               **result}  # fmt: skip
    path.write_text(
        json.dumps(
            payload, indent=2, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o)
        )
    )
    return path


def ingest_completejourney(root: Path) -> None:
    """Export Dunnhumby's Complete Journey into ``root``'s project and ingest its sources and attributes, once:
    a ``.propensity/ready`` marker makes later calls free (delete the folder to start again)."""
    if (root / ".propensity" / "ready").exists():
        return
    from propensity.datasets.completejourney import export_completejourney
    from propensity.events.ingest import ingest_attributes, ingest_files
    from propensity.workspace import Workspace

    export_completejourney(root / "data" / "completejourney")
    ws = Workspace.open(root)
    for source in ws.spec.sources:
        ingest_files(ws, [str(ws.spec.resolve(source.path))], source=source.name)
    for attr in ws.spec.attributes:
        ingest_attributes(ws, attr)
    (root / ".propensity" / "ready").write_text("ok")
