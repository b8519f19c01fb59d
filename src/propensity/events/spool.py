"""The live spool: an fsync'd, append-only file per writing process, moved into the event log in large batches.

Live events (``POST /v1/events``, stream sources) are acknowledged once they are durable, and opening the DuckDB
file for every batch cost more than everything else together (it also locked every CLI command out). So a
process that takes live events appends each validated batch to its own *spool segment* and answers as soon as
the segment is fsync'd; concurrent appends share one fsync (group commit). Whichever process next holds the
workspace lock with the database open (a server's periodic sync, ``propensity ingest``, ``score``, ...) moves
every spool into the log in one transaction (:func:`move_spools`), deduplicating on ``event_id`` against the
whole log exactly as bulk ingest does.

Crash safety. A record is ``magic | kind | length | crc32 | payload``; a record cut short by a crash (never
acknowledged: the fsync had not returned) fails its length or CRC check and is ignored, with everything after it.
How far each segment has been moved is recorded in the ``spool_progress`` table *in the same transaction* as the
events themselves, so a move killed at any point is either wholly done or not at all, and the next one resumes
from the recorded offset. A writer holds an exclusive ``flock`` on its open segment; a segment that can be locked
is closed (its writer rotated it or died), and once fully moved it is deleted.

>>> import tempfile, pyarrow as pa
>>> from pathlib import Path
>>> d = Path(tempfile.mkdtemp())
>>> w = SpoolWriter(d, "doc")
>>> w.append(KIND_EVENTS, pa.table({"x": [1, 2]}))
>>> [(k, t.num_rows) for k, t, _ in read_segment(w.path, 0)]
[(1, 2)]
>>> w.close()
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import filelock
import pyarrow as pa

log = logging.getLogger(__name__)

MAGIC = b"PSP1"
_HEADER = struct.Struct("<4sBII")  # magic, kind, payload length, crc32 of the payload
KIND_EVENTS = 1  # canonical events (the log's columns but ingested_at), validated
KIND_QUARANTINE = (
    2  # rejected stream records (the quarantine table's columns but ingest_id and quarantined_at)
)
SEGMENT_BYTES = 64 * 1024 * 1024  # a writer starts a new segment past this size
SPOOL_DIR = "spool"

SPOOL_PROGRESS_DDL = """
CREATE TABLE IF NOT EXISTS spool_progress (
    segment     VARCHAR PRIMARY KEY,
    moved_bytes BIGINT NOT NULL,
    moved_at    TIMESTAMPTZ NOT NULL
)
"""

# Spooled events → the log: first occurrence of each event_id, none already in the log. `spooled` has the log's
# columns but ingested_at, plus `__seq` (its order of arrival).
_INSERT_SPOOLED = """
INSERT INTO events
SELECT event_id, customer_id, event_type, event_time, available_at, amount, quantity, currency, sku, category,
       campaign_id, channel, plan, properties, source, ingest_now()
FROM spooled s
SEMI JOIN (SELECT min(__seq) AS first FROM spooled GROUP BY event_id) f ON s.__seq = f.first
WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = s.event_id)
"""


class SpoolError(OSError):
    """The spool could not be written (disk full, permissions): the batch is not durable and was not accepted."""


def spool_dir(state_dir: Path) -> Path:
    """Where a workspace's spools live (``.propensity/spool``)."""
    return state_dir / SPOOL_DIR


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolWriter:
    """Appends tables to this process's spool segment; :meth:`append` returns once the record is on disk.

    Thread-safe. Appends that arrive while another thread is writing wait for the next write, which takes all of
    them and pays one ``fsync`` for the group (group commit). ``fsync=False`` is for tests and benchmarks of the
    rest of the path only.
    """

    def __init__(
        self, directory: Path, owner: str, *, segment_bytes: int = SEGMENT_BYTES, fsync: bool = True
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in owner)[:40] or "spool"
        self.owner = f"{safe}-{uuid.uuid4().hex[:12]}"
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._cond = threading.Condition()
        self._pending: list[bytes] = []
        self._next = 0  # sequence number of the next record handed to append
        self._durable = -1  # every record up to this sequence number is on disk
        self._failed: dict[int, BaseException] = {}
        self._writing = False
        self._seq = 0
        self._fd = -1
        self.path = self.directory
        self.records_written = 0
        self.bytes_written = 0
        self._open_segment()

    def _open_segment(self) -> None:
        self.path = self.directory / f"{self.owner}-{self._seq:06d}.spool"
        self._seq += 1
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        filelock.lock_descriptor(fd)  # "open for appending": movers leave an open segment in place
        self._fd = fd
        self._size = 0
        if self.fsync:
            _fsync_dir(self.directory)  # the new file's name is durable too

    def append(self, kind: int, table: pa.Table) -> None:
        """Append one record and return once it is durable; raises :class:`SpoolError` if it is not."""
        payload = _ipc(table)
        record = _HEADER.pack(MAGIC, kind, len(payload), zlib.crc32(payload)) + payload
        with self._cond:
            if self._fd < 0:
                raise SpoolError("the spool is closed")
            seq = self._next
            self._next += 1
            self._pending.append(record)
            while self._durable < seq:
                if self._writing:
                    self._cond.wait()
                    continue
                self._writing = True
                batch, self._pending = self._pending, []
                last = self._next - 1
                first = last - len(batch) + 1
                self._cond.release()
                error: BaseException | None = None
                try:
                    self._write(batch)
                except OSError as exc:
                    error = exc
                finally:
                    self._cond.acquire()
                    self._writing = False
                if error is not None:
                    for s in range(first, last + 1):
                        self._failed[s] = error
                self._durable = last
                self._cond.notify_all()
            failure = self._failed.pop(seq, None)
        if failure is not None:
            raise SpoolError(f"could not write the live spool {self.path}: {failure}") from failure

    def _write(self, batch: list[bytes]) -> None:
        data = b"".join(batch)
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        if self.fsync:
            os.fsync(self._fd)
        self._size += len(data)
        self.records_written += len(batch)
        self.bytes_written += len(data)
        if self._size >= self.segment_bytes:
            old = self._fd
            self._open_segment()
            os.close(old)  # releases its lock: the segment is closed, a mover may delete it once moved

    def close(self) -> None:
        with self._cond:
            while self._writing:
                self._cond.wait()
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def read_segment(path: Path, start: int) -> Iterator[tuple[int, pa.Table, int]]:
    """The complete records of a segment from byte ``start``: ``(kind, table, offset after it)``. Stops at the
    end, or at a record cut short or damaged (a write that a crash interrupted, never acknowledged)."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    pos = 0
    while pos + _HEADER.size <= len(data):
        magic, kind, length, crc = _HEADER.unpack_from(data, pos)
        body_start = pos + _HEADER.size
        body = data[body_start : body_start + length]
        if magic != MAGIC or len(body) < length or zlib.crc32(body) != crc:
            if len(body) == length:  # a whole record with a bad checksum is damage, not a torn tail
                log.warning("%s: damaged spool record at byte %d; ignoring the rest", path.name, start + pos)
            return
        with pa.ipc.open_stream(pa.py_buffer(body)) as reader:
            table = reader.read_all()
        pos = body_start + length
        yield kind, table, start + pos


def _is_closed(path: Path) -> bool:
    """Whether no writer holds the segment open (it rotated, or its process ended)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        if not filelock.lock_descriptor(fd, blocking=False):  # the writer holds it while the segment is open
            return False
        filelock.unlock_descriptor(fd)
        return True
    finally:
        os.close(fd)


@dataclass
class MoveResult:
    """What one :func:`move_spools` did."""

    segments: int = 0
    records: int = 0
    events_read: int = 0
    inserted: int = 0
    quarantined: int = 0
    moved_at_us: int | None = None  # the move's ingested_at (epoch µs), when it inserted anything
    deleted: list[str] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return self.events_read - self.inserted


def pending_segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.spool")) if directory.is_dir() else []


def move_spools(
    con: duckdb.DuckDBPyConnection,
    directory: Path,
    *,
    max_bytes: int = 1 << 30,
    log: Any = None,
) -> MoveResult:
    """Move every spool segment in ``directory`` into the log of ``con`` (a read-write connection; the caller
    holds the workspace's write lock), in one transaction with the progress it records; delete the segments that
    are closed and fully moved. At most about ``max_bytes`` of records are read per call (call again for more).
    ``log``: an event store whose appends go through ``target(table)`` and ``commit(con)`` (the Parquet store);
    by default rows are inserted into the connection's own tables."""
    from propensity.events.log import transaction
    from propensity.events.validate import define_macros

    result = MoveResult()
    segments = pending_segments(directory)
    if not segments:
        return result
    con.execute(SPOOL_PROGRESS_DDL).fetchall()
    progress = {
        str(s): int(b) for s, b in con.execute("SELECT segment, moved_bytes FROM spool_progress").fetchall()
    }
    events: list[pa.Table] = []
    quarantine: list[pa.Table] = []
    advanced: dict[str, int] = {}
    finished: list[Path] = []
    budget = max_bytes
    for path in segments:
        closed = _is_closed(path)  # decided before reading: a segment closed now gets no more records
        start = progress.get(path.name, 0)
        end = start
        for kind, table, offset in read_segment(path, start):
            (events if kind == KIND_EVENTS else quarantine).append(table)
            result.records += 1
            budget -= offset - end
            end = offset
            if budget <= 0:
                break
        if end > start:
            advanced[path.name] = end
            result.segments += 1
        if closed and budget > 0:
            finished.append(path)
        if budget <= 0:
            break
    if advanced:
        with transaction(con):
            define_macros(con)
            if events:
                table = pa.concat_tables(events, promote_options="permissive")
                table = table.append_column("__seq", pa.array(range(table.num_rows), pa.int64()))
                result.events_read = table.num_rows
                con.register("spooled", table)
                insert = _INSERT_SPOOLED
                if log is not None:
                    insert = insert.replace("INSERT INTO events", f"INSERT INTO {log.target('events')}", 1)
                row = con.execute(insert).fetchall()[0]
                con.unregister("spooled")
                result.inserted = int(row[0]) if row else 0
            if quarantine:
                q = pa.concat_tables(quarantine, promote_options="permissive")
                con.register("spooled_q", q)
                target = "quarantine" if log is None else log.target("quarantine")
                con.execute(
                    f"INSERT INTO {target} SELECT ingest_id, source, source_file, row_number, reason, detail, "
                    "raw, ingest_now() FROM spooled_q"
                ).fetchall()
                con.unregister("spooled_q")
                result.quarantined = q.num_rows
            moved_at = con.execute("SELECT epoch_us(ingest_now())").fetchall()[0][0]
            result.moved_at_us = int(moved_at)
            con.execute(
                "INSERT INTO ingests VALUES (?, 'events', 'spool', ?, NULL, ?, ?, ?, ?, ingest_now(), ingest_now())",
                [uuid.uuid4().hex, ",".join(sorted(advanced)), result.events_read + result.quarantined,
                 result.inserted, result.duplicates, result.quarantined],
            ).fetchall()  # fmt: skip
            for name, end in advanced.items():
                con.execute(
                    "INSERT OR REPLACE INTO spool_progress VALUES (?, ?, ingest_now())", [name, end]
                ).fetchall()
            if log is not None:
                log.commit(con)  # the store's files and manifest, inside the transaction of the progress
    for path in finished:
        # Closed and (now) moved to its end: the file and its progress row can go. A crash between the two
        # leaves a row for a missing file, which the next move removes.
        if read_segment_end(path, advanced.get(path.name, progress.get(path.name, 0))):
            path.unlink(missing_ok=True)
            result.deleted.append(path.name)
    present = {p.name for p in pending_segments(directory)}
    stale = [s for s in {*progress, *advanced} if s not in present]
    if stale:
        con.execute("DELETE FROM spool_progress WHERE segment IN (SELECT unnest(?))", [stale]).fetchall()
    return result


def read_segment_end(path: Path, moved: int) -> bool:
    """Whether nothing complete is left to move in the segment after byte ``moved``."""
    return next(read_segment(path, moved), None) is None
