"""Reading scoring runs for pages that show them again and again (the console): a run's rows never change once
written, so the rows of the last runs read are kept in memory (up to :data:`MAX_BYTES`), keyed by the store and
the run id. Run records (whose status and details may change) are always read from the store.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import pyarrow as pa

MAX_BYTES = 256 * 1024 * 1024

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
