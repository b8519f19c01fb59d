"""`propensity stream`: stream sources consumed by a process of their own.

Each declared stream source gets a :class:`~propensity.events.streams.StreamConsumer` thread writing into this
process's spool; a mover moves the spools into the event log every ``move_interval`` when the workspace is free
(so servers' syncs and CLI commands see the events); when the project's online store is Redis, new events are also
applied there at once (every server reads them on its next prediction). With the in-process store, the servers
apply stream events from the log at their next sync (about a second).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from propensity.config.spec import EventSource
from propensity.core.errors import PropensityError
from propensity.events.live import EventIdIndex, LiveIngest, LiveResult
from propensity.events.log import DuckDBEventLog, open_moved
from propensity.events.spool import SpoolWriter
from propensity.events.streams import StreamConsumer, StreamStats, open_stream
from propensity.serving.store import OnlineStore
from propensity.workspace import Workspace, WorkspaceLockedError

log = logging.getLogger(__name__)


def stream_sources(workspace: Workspace, names: Sequence[str] = ()) -> list[EventSource]:
    """The declared stream sources (those named, or all)."""
    streams = [s for s in workspace.spec.sources if s.is_stream]
    if names:
        chosen = []
        for name in names:
            source = workspace.spec.source(name)
            if not source.is_stream:
                raise PropensityError(f"sources[{name}] is a file source; `propensity ingest` reads it")
            chosen.append(source)
        return chosen
    if not streams:
        raise PropensityError(
            "the project declares no stream source; add one to propensity.yaml, e.g.\n"
            "  sources:\n    - name: web\n      kafka: {topic: web-events, group: propensity}"
        )
    return streams


@dataclass
class StreamRun:
    """The outcome of :func:`run_streams`."""

    stats: list[StreamStats]
    seconds: float
    moved: int = 0
    applied_online: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "moved_into_log": self.moved,
            "applied_online": self.applied_online,
            "sources": [
                {
                    "source": s.source,
                    "consumed": s.consumed,
                    "accepted": s.accepted,
                    "duplicates": s.duplicates,
                    "quarantined": s.quarantined,
                    "errors": s.errors,
                    "lag": s.lag,
                }
                for s in self.stats
            ],
        }


def run_streams(
    workspace: Workspace,
    sources: Sequence[EventSource],
    *,
    store: OnlineStore | None = None,
    until_idle: float | None = None,
    max_seconds: float | None = None,
    move_interval: float = 1.0,
    stop: threading.Event | None = None,
    progress: Callable[[list[StreamStats]], None] | None = None,
    fsync: bool = True,
    options: dict[str, Any] | None = None,
) -> StreamRun:
    """Consume ``sources`` until ``stop`` is set, or (``until_idle``) every source has had nothing for that many
    seconds with no lag left, or ``max_seconds`` have passed. Returns the counts."""
    started = time.perf_counter()
    elog = DuckDBEventLog(workspace.db_path)
    index = EventIdIndex()
    with workspace.write_lock(), open_moved(workspace) as (con, _):  # also moves spools a previous run left
        index.load(con)
    names = "-".join(s.name for s in sources)
    live = LiveIngest(workspace.spec.events, SpoolWriter(elog.spool_dir, f"stream-{names}", fsync=fsync),
                      index=index)  # fmt: skip
    stop = stop or threading.Event()
    apply_lock = threading.Lock()
    run = StreamRun([], 0.0)

    def apply(result: LiveResult) -> None:
        if store is None:
            return
        with apply_lock:
            try:
                run.applied_online += store.apply(result.events)
            except Exception:  # the log has them; servers apply them from it
                log.exception("could not apply %d stream events to the online store", result.events.num_rows)

    consumers = [StreamConsumer(open_stream(s, **(options or {})), s, live, on_events=apply) for s in sources]
    run.stats = [c.stats for c in consumers]

    def move() -> None:
        try:
            with workspace.write_lock(timeout_s=0), open_moved(workspace) as (_, moved):
                run.moved += moved
        except WorkspaceLockedError:
            pass

    for c in consumers:
        c.start()
    last_move = time.monotonic()
    idle_since: float | None = None
    try:
        while not stop.is_set():
            stop.wait(0.2)
            now = time.monotonic()
            if now - last_move >= move_interval:
                move()
                last_move = now
            if progress is not None:
                progress(run.stats)
            if max_seconds is not None and time.perf_counter() - started >= max_seconds:
                break
            if until_idle is not None:
                quiet = all(
                    (s.last_batch_at is None or time.time() - s.last_batch_at >= until_idle) and not s.lag
                    for s in run.stats
                )
                if quiet and all(s.lag is not None for s in run.stats):
                    idle_since = idle_since or now
                    if now - idle_since >= 0:
                        break
                else:
                    idle_since = None
    finally:
        for c in consumers:
            c.stop()
        live.close()
        try:
            with workspace.write_lock(timeout_s=60), open_moved(workspace) as (_, moved):
                run.moved += moved
        except WorkspaceLockedError:
            log.warning(
                "the workspace stayed busy; the spool will be moved in by the next process to open it"
            )
    run.seconds = time.perf_counter() - started
    return run
