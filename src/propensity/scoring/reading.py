"""Reading scoring runs for pages that show them again and again (the console): a run's rows never change once
written, so the rows of the last runs read are kept in memory (up to :data:`MAX_BYTES`), keyed by the store and
the run id. Run records (whose status and details may change) and other small reads (:func:`memo`) are kept
until the workspace's stored state changes (the DuckDB file, its WAL, the event folder) or for at most
:data:`CACHE_S`: opening the DuckDB file is most of a page's cost.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import pyarrow as pa

from propensity.workspace import Workspace

MAX_BYTES = 256 * 1024 * 1024
CACHE_S = 30.0
T = TypeVar("T")

_rows: OrderedDict[tuple[str, str], pa.Table] = OrderedDict()
_lock = threading.Lock()


def _store_key(store: Any) -> str:
    where = getattr(store, "path", None) or getattr(store, "url", None)
    return f"{type(store).__name__}:{where if where is not None else id(store)}"


def run_rows(store: Any, run_id: str) -> pa.Table:
    """``store.read_run(run_id)``, from memory when this process read it recently."""
    key = (_store_key(store), run_id)
    with _lock:
        if key in _rows:
            _rows.move_to_end(key)
            return _rows[key]
    table: pa.Table = store.read_run(run_id)
    with _lock:
        _rows[key] = table
        while len(_rows) > 1 and sum(t.nbytes for t in _rows.values()) > MAX_BYTES:
            _rows.popitem(last=False)
    return table


def latest(runs: list[Any], status: str | None = "complete") -> Any:
    """The newest of ``runs`` (as ``store.runs()`` lists them, newest first) with ``status``."""
    return next((r for r in runs if status is None or r.status == status), None)


def stored_state(workspace: Workspace) -> tuple[Any, ...]:
    """What changes when events, monitor runs or scoring runs are stored: the DuckDB file and its WAL (and the
    Parquet event folder when events live there), by modification time and size."""
    out: list[Any] = []
    db = workspace.state_dir / "propensity.duckdb"
    for path in (db, db.with_name(db.name + ".wal"), workspace.spec.resolve(workspace.spec.storage.path)):
        try:
            st = path.stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


_memo: dict[tuple[str, str], tuple[tuple[Any, ...], float, Any]] = {}


def memo(workspace: Workspace, name: str, compute: Callable[[], T]) -> T:
    """``compute()``, from memory when it was computed for ``workspace`` less than :data:`CACHE_S` ago and its
    stored state has not changed since (a store outside the workspace, e.g. PostgreSQL, is seen within
    :data:`CACHE_S`)."""
    key = (str(workspace.root), name)
    state = stored_state(workspace)
    with _lock:
        hit = _memo.get(key)
    if hit is not None and hit[0] == state and time.monotonic() - hit[1] < CACHE_S:
        value: T = hit[2]
        return value
    value = compute()
    with _lock:
        _memo[key] = (state, time.monotonic(), value)
    return value


def store_runs(workspace: Workspace, store: Any) -> list[Any]:
    """``store.runs()`` (newest first) through :func:`memo`."""
    runs: list[Any] = memo(workspace, "score-runs", store.runs)
    return runs
