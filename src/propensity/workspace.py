"""A workspace: a folder holding ``propensity.yaml`` and a ``.propensity/`` folder with the project's state.

``.propensity/`` holds the DuckDB file (event log, quarantine, attributes, and later features, scores and runs),
model bundles and reports. Every process that writes to the DuckDB file takes the workspace's write lock first,
so concurrent commands (two ingests, an ingest and a report) take turns instead of corrupting or failing.

The lock is ``filelock``'s reader/writer lock (an SQLite transaction on ``.propensity/write.lock``: portable to
Windows, released by the OS when the process dies); this module adds re-entrancy within a thread and upgrades.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import filelock

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
    """This process's hold on one lock file: a reader/writer lock, a mode, a depth, and a re-entrant thread lock."""

    def __init__(self, path: Path) -> None:
        self.thread = threading.RLock()
        self.path = path
        self.rw: filelock.ReadWriteLock | None = None
        self.mode: str | None = None  # "read" | "write" while held
        self.depth = 0

    def lock(self) -> filelock.ReadWriteLock:
        if self.rw is None:  # one instance per lock file and process; threads take turns on ``thread`` first
            self.rw = filelock.ReadWriteLock(self.path, is_singleton=False)
        return self.rw


_PROCESS_LOCKS: dict[str, _ProcessLock] = {}
_PROCESS_LOCKS_GUARD = threading.Lock()


def _acquire(held: _ProcessLock, mode: str, deadline: float, root: Path | str, timeout_s: float) -> None:
    rw = held.lock()
    wait = max(0.0, deadline - time.monotonic())
    try:
        if mode == "write":
            rw.acquire_write(timeout=wait, blocking=timeout_s > 0)
        else:
            rw.acquire_read(timeout=wait, blocking=timeout_s > 0)
    except filelock.Timeout:
        raise WorkspaceLockedError(
            f"{root}: another propensity process has held the workspace for over "
            f"{timeout_s:.0f}s; wait for it to finish (or stop it) and retry"
        ) from None
    held.mode = mode


def _release(held: _ProcessLock) -> None:
    if held.rw is not None and held.mode is not None:
        held.rw.release()
    held.mode = None


@contextmanager
def file_lock(
    path: Path, *, exclusive: bool, timeout_s: float = 600.0, root: Path | str | None = None
) -> Iterator[None]:
    """Hold ``path`` as an OS-backed lock, exclusive or shared, waiting up to ``timeout_s`` (0: try once).

    Re-entrant within a thread: a shared hold inside an exclusive one is the exclusive one; an exclusive hold
    inside a shared one upgrades it for its duration (like ``flock``, not atomically: the shared hold is let go
    first, and taken back if the upgrade times out). Threads of one process take turns."""
    key = str(path)
    with _PROCESS_LOCKS_GUARD:
        held = _PROCESS_LOCKS.setdefault(key, _ProcessLock(path))
    where = root if root is not None else path.parent
    got = held.thread.acquire(blocking=False) if timeout_s <= 0 else held.thread.acquire(timeout=timeout_s)
    if not got:
        raise WorkspaceLockedError(f"{where}: another thread of this process holds the workspace; retry")
    deadline = time.monotonic() + max(0.0, timeout_s)
    want = "write" if exclusive else "read"
    before = held.mode
    try:
        if held.mode is None:
            _acquire(held, want, deadline, where, timeout_s)
        elif want == "write" and held.mode == "read":
            _release(held)
            try:
                _acquire(held, "write", deadline, where, timeout_s)
            except BaseException:
                _acquire(held, "read", time.monotonic() + 600.0, where, 600.0)  # keep the outer shared hold
                raise
        held.depth += 1
        try:
            yield
        finally:
            held.depth -= 1
            if held.depth == 0:
                _release(held)
            elif held.mode != before:
                _release(held)  # back to shared
                _acquire(held, "read", time.monotonic() + 600.0, where, 600.0)
    finally:
        held.thread.release()
