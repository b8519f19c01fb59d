"""A workspace: a folder holding ``propensity.yaml`` and a ``.propensity/`` folder with the project's state.

``.propensity/`` holds the DuckDB file (event log, quarantine, attributes, and later features, scores and runs),
model bundles and reports. Every process that writes to the DuckDB file takes the workspace's write lock first,
so concurrent commands (two ingests, an ingest and a report) take turns instead of corrupting or failing.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from propensity.config.spec import SPEC_FILENAME, ProjectSpec, load_spec, parse_spec
from propensity.core.errors import PropensityError

STATE_DIR = ".propensity"
DB_FILENAME = "propensity.duckdb"


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

    @contextmanager
    def write_lock(self, *, timeout_s: float = 600.0) -> Iterator[None]:
        """Hold the workspace's exclusive lock (an OS file lock: released even if the process is killed)."""
        lock_path = self.state_dir / "write.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise WorkspaceLockedError(
                            f"{self.root}: another propensity process has held the workspace for over "
                            f"{timeout_s:.0f}s; wait for it to finish (or stop it) and retry"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock
