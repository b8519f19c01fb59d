"""The workspace lock: shared/exclusive across processes, re-entrant within a thread, released when a holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from propensity.workspace import Workspace, WorkspaceLockedError

_HOLD = """
import sys, time
from propensity.workspace import Workspace
ws = Workspace.open(sys.argv[1])
lock = ws.write_lock() if sys.argv[2] == "write" else ws.read_lock()
with lock:
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(root: Path, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(root), mode], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"  # it holds the lock now
    return proc


def _can_take(ws: Workspace, *, exclusive: bool) -> bool:
    try:
        with ws.write_lock(timeout_s=0) if exclusive else ws.read_lock(timeout_s=0):
            return True
    except WorkspaceLockedError:
        return False


def test_the_lock_is_reentrant_within_a_thread(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path)
    with ws.write_lock():
        with ws.read_lock(), ws.write_lock(timeout_s=0):  # a reader inside a writer is the writer
            pass
        with ws.write_lock():
            pass
    with ws.read_lock():
        with ws.read_lock():
            pass
        with ws.write_lock(timeout_s=0):  # upgrade for its duration ...
            pass
        with ws.read_lock():  # ... and back to shared
            pass
    with ws.write_lock(timeout_s=0):  # everything was released
        pass


def test_other_threads_take_turns(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path)
    results: list[bool] = []
    with ws.write_lock():
        t = threading.Thread(target=lambda: results.append(_can_take(ws, exclusive=False)))
        t.start()
        t.join()
    t = threading.Thread(target=lambda: results.append(_can_take(ws, exclusive=True)))
    t.start()
    t.join()
    assert results == [False, True]


@pytest.mark.slow
def test_processes_share_reads_exclude_writes_and_a_killed_holder_lets_go(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path)
    reader = _holder(tmp_path, "read")
    try:
        assert _can_take(ws, exclusive=False)  # readers share
        assert not _can_take(ws, exclusive=True)
        with ws.read_lock():  # a failed upgrade keeps the shared hold
            with (
                pytest.raises(WorkspaceLockedError, match="another propensity process"),
                ws.write_lock(timeout_s=0),
            ):
                pass
            assert not _can_take(ws, exclusive=True)
    finally:
        reader.send_signal(signal.SIGKILL)
        reader.wait()
    writer = _holder(tmp_path, "write")
    try:
        assert not _can_take(ws, exclusive=False)
        assert not _can_take(ws, exclusive=True)
    finally:
        writer.send_signal(signal.SIGKILL)  # kill -9: the OS releases its hold
        writer.wait()
    assert _can_take(ws, exclusive=True)
