"""A workspace: a folder holding ``propensity.yaml`` and a ``.propensity/`` folder with the project's state.

``.propensity/`` holds the DuckDB file (event log, quarantine, attributes, and later features, scores and runs),
model bundles and reports. Every process that writes to the DuckDB file takes the workspace's write lock first,
so concurrent commands (two ingests, an ingest and a report) take turns instead of corrupting or failing.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from propensity.config.spec import SPEC_FILENAME, ProjectSpec, load_spec, parse_spec
from propensity.core.errors import PropensityError

STATE_DIR = ".propensity"
DB_FILENAME = "propensity.duckdb"
LOCK_FILENAME = "write.lock"


class WorkspaceLockedError(PropensityError):
    """Another process held the workspace lock for longer than we were willing to wait."""


@dataclass(frozen=True)
class Workspace:
    """A project folder. ``spec`` is loaded from its ``propensity.yaml`` (an empty spec when there is none)."""

    root: Path
    spec: ProjectSpec

    @classmethod
    def open(cls, root: str | Path = ".", *, require_spec: bool = False) -> Workspace:
        path = Path(root).expanduser().resolve()
        spec_file = path / SPEC_FILENAME
        if spec_file.exists():
            spec = load_spec(spec_file)
        elif require_spec:
            raise PropensityError(
                f"{path} has no {SPEC_FILENAME}; run `propensity init {path}` to create a commented example"
            )
        else:
            spec = parse_spec({}, root=path)
        return cls(path, spec)

    @property
    def state_dir(self) -> Path:
        d = self.root / STATE_DIR
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def db_path(self) -> Path:
        return self.state_dir / DB_FILENAME

    @property
    def lock_path(self) -> Path:
        return self.state_dir / LOCK_FILENAME

    def write_lock(self, *, timeout_s: float = 600.0) -> AbstractContextManager[None]:
        """Hold the workspace's exclusive lock (an OS file lock: released even if the process is killed).

        Writers of the DuckDB file hold it; readers hold :meth:`read_lock`, so the two take turns instead of one of
        them failing on DuckDB's own file lock. Re-entrant within a thread (a reader inside a writer is fine);
        other threads of the process wait their turn."""
        return file_lock(self.lock_path, exclusive=True, timeout_s=timeout_s, root=self.root)

    def read_lock(self, *, timeout_s: float = 600.0) -> AbstractContextManager[None]:
        """Hold the workspace's lock shared: any number of readers at once, no writer meanwhile."""
        return file_lock(self.lock_path, exclusive=False, timeout_s=timeout_s, root=self.root)


class _ProcessLock:
    """This process's hold on one lock file: one descriptor, a mode, a depth, and a re-entrant thread lock."""

    def __init__(self) -> None:
        self.thread = threading.RLock()
        self.fd = -1
        self.mode = 0
        self.depth = 0


_PROCESS_LOCKS: dict[str, _ProcessLock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


def _flock(fd: int, mode: int, deadline: float, root: Path | str, timeout_s: float) -> None:
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise WorkspaceLockedError(
                    f"{root}: another propensity process has held the workspace for over "
                    f"{timeout_s:.0f}s; wait for it to finish (or stop it) and retry"
                ) from None
            time.sleep(0.02)


@contextmanager
def file_lock(
    path: Path, *, exclusive: bool, timeout_s: float = 600.0, root: Path | str | None = None
) -> Iterator[None]:
    """Hold ``path`` as an OS file lock, exclusive or shared, waiting up to ``timeout_s`` (0: try once).

    Re-entrant within a thread: a shared hold inside an exclusive one is the exclusive one; an exclusive hold
    inside a shared one upgrades it for its duration. Threads of one process take turns."""
    key = str(path)
    with _PROCESS_LOCKS_GUARD:
        held = _PROCESS_LOCKS.setdefault(key, _ProcessLock())
    where = root if root is not None else path.parent
    got = held.thread.acquire(blocking=False) if timeout_s <= 0 else held.thread.acquire(timeout=timeout_s)
    if not got:
        raise WorkspaceLockedError(f"{where}: another thread of this process holds the workspace; retry")
    deadline = time.monotonic() + max(0.0, timeout_s)
    want = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    before = held.mode
    try:
        if held.depth == 0:
            held.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if held.mode == 0 or (want == fcntl.LOCK_EX and held.mode == fcntl.LOCK_SH):
                _flock(held.fd, want, deadline, where, timeout_s)
                held.mode = want
        except BaseException:
            if held.depth == 0:
                os.close(held.fd)
                held.fd, held.mode = -1, 0
            raise
        held.depth += 1
        try:
            yield
        finally:
            held.depth -= 1
            if held.depth == 0:
                os.close(held.fd)  # closing the descriptor releases the lock
                held.fd, held.mode = -1, 0
            elif held.mode != before:
                fcntl.flock(held.fd, before)  # back to shared
                held.mode = before
    finally:
        held.thread.release()
