"""A server's live path: events acknowledged once durable in its spool, the log kept in step, snapshots taken.

* :meth:`LivePath.accept` (a worker thread): validate, deduplicate, append to this server's spool (fsync, group
  commit) and return the new events, which the caller applies to the online store on the event loop.
* :meth:`LivePath.run` (a task on the event loop): every ``sync_interval``, when the workspace lock is free,
  move every spool into the event log (this server's and any other process's), then apply to the online store
  what the log gained from others (``propensity ingest``, ``propensity stream``, another server) since the last
  sync; every ``snapshot_interval`` (and at shutdown) snapshot the in-process store.

Attributes: rows this server wrote (``POST /v1/attributes``) are applied when accepted and noted
(:meth:`LivePath.remember_attributes`); any other new rows of a source mean it was loaded or reloaded by another
process (``propensity ingest`` replaces a source's rows), so the sync replaces that source's versions in the store
with its rows now, as the log has them. A store that cannot replace (Redis) takes the new rows as added versions.

The *watermark* is the greatest ``ingested_at`` such that every event of the log ingested at or before it has
been applied to this server's store; snapshots carry it, so a restart replays only the log after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from starlette.concurrency import run_in_threadpool

from propensity.config.spec import EventSource
from propensity.events.live import LIVE_SOURCE, EventIdIndex, LiveIngest, LiveResult
from propensity.events.log import DuckDBEventLog, open_moved
from propensity.events.spool import SpoolWriter
from propensity.events.streams import StreamConsumer, open_stream, stats_metrics
from propensity.serving.store import OnlineStore
from propensity.workspace import Workspace, WorkspaceLockedError

log = logging.getLogger(__name__)

_ATTR_SQL = (
    "SELECT customer_id, attribute, value, source, epoch_us(valid_from) AS valid_from, "
    "epoch_us(available_at) AS available_at FROM attributes WHERE epoch_us(ingested_at) > ? ORDER BY available_at"
)
_ATTR_COLUMNS = ("customer_id", "attribute", "value", "source", "valid_from", "available_at")
_SOURCE_SQL = (
    "SELECT customer_id, attribute, value, source, epoch_us(valid_from) AS valid_from, "
    "epoch_us(available_at) AS available_at FROM attributes WHERE source = ? ORDER BY available_at"
)


def _attribute_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (str(row["customer_id"]), row["attribute"], row["value"], str(row["source"]),
            int(row["valid_from"]), int(row["available_at"]))  # fmt: skip


@dataclass
class SyncResult:
    moved: int = 0  # events the move inserted into the log
    applied: int = 0  # events from others applied to the store
    attributes: int = 0
    reloaded: tuple[str, ...] = ()  # attribute sources whose versions were replaced (reloaded elsewhere)
    seconds: float = 0.0
    skipped: bool = False  # the workspace was busy


def log_watermark(con: Any) -> int | None:
    """The greatest ``ingested_at`` of the log (events and attributes), epoch µs; None when it is empty."""
    (latest,) = con.execute(
        "SELECT max(t) FROM (SELECT epoch_us(max(ingested_at)) AS t FROM events "
        "UNION ALL SELECT epoch_us(max(ingested_at)) FROM attributes)"
    ).fetchall()[0]
    return None if latest is None else int(latest)


class LivePath:
    """See the module docstring. ``snapshotter`` (optional) is called on the event loop with the watermark."""

    def __init__(
        self,
        workspace: Workspace,
        store: OnlineStore,
        *,
        watermark_us: int,
        index: EventIdIndex | None = None,
        owner: str = "api",
        fsync: bool = True,
        sync_interval: float = 1.0,
        snapshot_interval: float = 300.0,
        snapshotter: Callable[[int], Any] | None = None,
    ) -> None:
        self.workspace = workspace
        self.store = store
        self.watermark_us = watermark_us
        self.log = DuckDBEventLog(workspace.db_path)
        spool = SpoolWriter(self.log.spool_dir, owner, fsync=fsync)
        self.ingest = LiveIngest(workspace.spec.events, spool, index=index)
        self.sync_interval = sync_interval
        self.snapshot_interval = snapshot_interval
        self.snapshotter = snapshotter
        self._own: set[int] = set()  # id hashes this server applied at acceptance, not yet seen in the log
        # Attribute versions this server wrote and applied, not yet seen by a sync (see remember_attributes).
        self._own_attributes: set[tuple[Any, ...]] = set()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.last_sync: SyncResult | None = None
        self.syncs = 0
        self.sync_errors = 0
        self.last_snapshot_at: float | None = None
        self.streams: list[StreamConsumer] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def add_streams(self, sources: Sequence[EventSource], **options: Any) -> None:
        """Consume these stream sources in this server (started with :meth:`start`): each batch durable in
        this server's spool, then committed, then applied to its store on the event loop."""
        for source in sources:
            stream = open_stream(source, **options)
            self.streams.append(StreamConsumer(stream, source, self.ingest, on_events=self._from_stream))

    def _from_stream(self, result: LiveResult) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._apply_stream, result)

    def _apply_stream(self, result: LiveResult) -> None:
        try:
            self.store.apply(result.events)
            self.remember(result.hashes)
        except Exception:  # durable in the log; the next sync (or start) applies what did not land
            log.exception("applying %d stream events to the online store failed", result.events.num_rows)

    @classmethod
    def attach(cls, workspace: Workspace, store: OnlineStore, **options: Any) -> LivePath:
        """A live path for a store just built from the log (the log's watermark and ids read now)."""
        index = EventIdIndex()
        with workspace.write_lock(), open_moved(workspace) as (con, _):
            latest = log_watermark(con)
            index.load(con)
        return cls(
            workspace, store, watermark_us=-(1 << 62) if latest is None else latest, index=index, **options
        )

    @property
    def index(self) -> EventIdIndex:
        return self.ingest.index

    # ------------------------------------------------------------------------------------------ accept

    def accept(self, events: Any) -> LiveResult:
        """Validate, deduplicate and durably spool one HTTP batch (a worker thread); raises RejectedBatch."""
        result = self.ingest.accept(events, LIVE_SOURCE)
        self.remember(result.hashes)
        return result

    def remember(self, hashes: np.ndarray) -> None:
        """Note events this process applies itself (by id hash), so the sync does not apply them again."""
        if len(hashes):
            self._own.update(hashes.tolist())
            if len(self._own) > 5_000_000:
                self._own.clear()  # harmless: the store ignores events it has already applied

    def remember_attributes(self, versions: Sequence[Any]) -> None:
        """Note attribute versions this server wrote and applied itself (``POST /v1/attributes``), so the sync
        neither applies them again nor takes them for a reload of their source."""
        self._own_attributes.update(_attribute_key(v.as_row()) for v in versions)
        if len(self._own_attributes) > 5_000_000:
            self._own_attributes.clear()  # the sync then reloads those sources: slower, still right

    def _attribute_changes(
        self, con: Any, rows: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        """Of the attribute rows the log gained: those to add to the store, and the sources to replace in it
        (with all their rows now). Rows this server wrote are neither."""
        others = []
        for row in rows:
            key = _attribute_key(row)
            if key in self._own_attributes:
                self._own_attributes.discard(key)
            else:
                others.append(row)
        if not others or not hasattr(self.store, "replace_attribute_source"):
            return others, {}
        reloads = {}
        for source in sorted({str(r["source"]) for r in others}):
            reloads[source] = [dict(zip(_ATTR_COLUMNS, r, strict=True))
                               for r in con.execute(_SOURCE_SQL, [source]).fetchall()]  # fmt: skip
        return [], reloads

    # -------------------------------------------------------------------------------------------- sync

    def sync_db(
        self,
    ) -> tuple[pa.Table | None, list[dict[str, Any]], dict[str, list[dict[str, Any]]], int, SyncResult]:
        """The database half of a sync (a worker thread): move the spools in, read what others added."""
        started = time.perf_counter()
        result = SyncResult()
        try:
            with self.workspace.write_lock(timeout_s=0), open_moved(self.workspace) as (con, moved):
                result.moved = moved
                latest = log_watermark(con)
                if latest is None or latest <= self.watermark_us:
                    result.seconds = time.perf_counter() - started
                    return None, [], {}, self.watermark_us, result
                new = con.sql(
                    "SELECT * EXCLUDE (ingested_at), hash(event_id) AS id_hash FROM events "
                    f"WHERE epoch_us(ingested_at) > {int(self.watermark_us)} ORDER BY available_at, event_id"
                ).to_arrow_table()
                attrs = [dict(zip(_ATTR_COLUMNS, r, strict=True))
                         for r in con.execute(_ATTR_SQL, [self.watermark_us]).fetchall()]  # fmt: skip
                attrs, reloads = self._attribute_changes(con, attrs)
        except WorkspaceLockedError:
            result.skipped = True
            return None, [], {}, self.watermark_us, result
        hashes = new.column("id_hash").to_numpy().astype(np.uint64, copy=False)
        self.index.add(hashes)
        if self._own:
            mine = np.fromiter((h in self._own for h in hashes.tolist()), bool, len(hashes))
            self._own.difference_update(hashes[mine].tolist())
            new = new.filter(pa.array(~mine))
        result.seconds = time.perf_counter() - started
        return new.drop_columns(["id_hash"]), attrs, reloads, latest, result

    async def sync(self) -> SyncResult:
        """One sync: the database work in a thread, then the store (this event loop's) brought up to date."""
        new, attrs, reloads, watermark, result = await run_in_threadpool(self.sync_db)
        if new is not None and new.num_rows:
            result.applied = self.store.apply(new)
        if attrs:
            self.store.apply_attributes(attrs)
            result.attributes = len(attrs)
        for source, rows in reloads.items():
            result.attributes += self.store.replace_attribute_source(source, rows)  # type: ignore[attr-defined]
            log.info("attribute source %s reloaded online (%d versions)", source, len(rows))
        result.reloaded = tuple(reloads)
        if watermark > self.watermark_us:
            advance = getattr(self.store, "advance_watermark", None)
            if advance is not None:
                advance(watermark)  # a shared store: everything up to here is in it
        self.watermark_us = watermark
        self.last_sync = result
        self.syncs += 1
        return result

    async def run(self) -> None:
        """Sync every ``sync_interval`` and snapshot every ``snapshot_interval`` until :meth:`stop`."""
        last_snapshot = time.monotonic()
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.sync_interval)
            if self._stopping.is_set():
                break
            try:
                await self.sync()
                if (
                    self.snapshotter is not None
                    and time.monotonic() - last_snapshot >= self.snapshot_interval
                ):
                    last_snapshot = time.monotonic()
                    await self.snapshot()
            except Exception:
                self.sync_errors += 1
                log.exception("live sync failed; retrying in %.1fs", self.sync_interval)

    async def snapshot(self) -> None:
        if self.snapshotter is None:
            return
        outcome = self.snapshotter(self.watermark_us)
        if asyncio.iscoroutine(outcome):
            await outcome
        self.last_snapshot_at = time.time()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self.run())
        for consumer in self.streams:
            consumer.start()

    async def stop(self) -> None:
        """Stop the loop, move this server's spool into the log if the workspace is free, snapshot, close."""
        self._stopping.set()
        for consumer in self.streams:
            await asyncio.to_thread(consumer.stop)
        if self._task is not None:
            await self._task
        try:
            for _ in range(50):
                result = await self.sync()
                if not result.skipped:
                    break
                await asyncio.sleep(0.1)
            await self.snapshot()
        except Exception:
            log.exception("final live sync or snapshot failed (the spool keeps every acknowledged event)")
        finally:
            self.ingest.close()

    def metrics(self) -> str:
        lines = [
            "# HELP propensity_live_syncs_total Spool moves into the event log (with the store brought up to date).",
            "# TYPE propensity_live_syncs_total counter",
            f"propensity_live_syncs_total {self.syncs}",
            "# TYPE propensity_live_sync_errors_total counter",
            f"propensity_live_sync_errors_total {self.sync_errors}",
            "# HELP propensity_live_spool_bytes_total Bytes written to this server's spool.",
            "# TYPE propensity_live_spool_bytes_total counter",
            f"propensity_live_spool_bytes_total {self.ingest.spool.bytes_written}",
        ]
        if self.last_snapshot_at is not None:
            lines += [
                "# TYPE propensity_online_snapshot_age_seconds gauge",
                f"propensity_online_snapshot_age_seconds {time.time() - self.last_snapshot_at:.1f}",
            ]
        return "\n".join(lines) + "\n" + stats_metrics(self.streams)
