"""Crash safety and concurrency: a file is in the log completely or not at all, and writers take turns."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
from tests.conftest import canonical_events, write_parquet

from propensity.events.log import open_event_log
from propensity.workspace import Workspace

INGEST = [sys.executable, "-m", "propensity.cli.__main__"]


def _count(ws: Workspace) -> tuple[int, int]:
    with open_event_log(ws).connection() as con:
        events = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
        ingests = con.execute("SELECT count(*) FROM ingests").fetchall()[0][0]
        return int(events), int(ingests)


@pytest.mark.slow
def test_kill_9_mid_file_leaves_nothing_half_written_and_rerun_completes(tmp_path: Path) -> None:
    n = 200_000
    path = write_parquet(canonical_events(n, customers=1000), tmp_path / "big.parquet")
    ws = Workspace.open(tmp_path)
    trace = tmp_path / "trace.log"
    env = {**os.environ, "PROPENSITY_INGEST_TRACE": str(trace), "PROPENSITY_INGEST_BATCH_ROWS": "10000"}
    proc = subprocess.Popen([*INGEST, "ingest", str(path), "-w", str(tmp_path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    # Wait until several batches are staged inside the open transaction, then kill without warning.
    while time.monotonic() < deadline and proc.poll() is None:
        if trace.exists() and len(trace.read_text().splitlines()) >= 3:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the ingest finished before it could be interrupted"
    staged = len(trace.read_text().splitlines())
    assert staged < n // 10_000
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    assert _count(ws) == (0, 0)  # nothing of the interrupted file is visible

    done = subprocess.run([*INGEST, "ingest", str(path), "-w", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _count(ws) == (n, 1)


@pytest.mark.slow
def test_concurrent_ingests_into_one_workspace(tmp_path: Path) -> None:
    files = [
        write_parquet(canonical_events(20_000, seed=i).set_column(0, "event_id", pa.array([f"f{i}-{j}" for j in range(20_000)])),
                      tmp_path / f"part{i}.parquet")
        for i in range(3)
    ]  # fmt: skip
    shared = write_parquet(canonical_events(5_000, seed=9), tmp_path / "shared.parquet")
    procs = [
        subprocess.Popen([*INGEST, "ingest", str(f), str(shared), "-w", str(tmp_path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for f in files
    ]  # fmt: skip
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    events, _ = _count(Workspace.open(tmp_path))
    assert events == 3 * 20_000 + 5_000  # every distinct event once, the shared file's once
