"""The event log: append-only storage of canonical events, and the reads later stages need.

:class:`EventLog` is the small interface every backend honours; :class:`DuckDBEventLog` is the embedded default
(the reference implementation), tables in the workspace's DuckDB file; :class:`~propensity.events.parquet_log.
ParquetEventLog` keeps the same tables as Parquet files that Spark reads too. :func:`open_event_log` gives a
workspace's log, as its spec's ``storage:`` says. Appends are transactional: a batch (a whole file, for bulk
ingest) is in the log completely or not at all, even if the process is killed mid-write.

Every backend hands out DuckDB connections (:meth:`EventLog.connection`) in which ``events``, ``attributes`` and
``quarantine`` can be read, so the SQL of later stages runs unchanged on any of them; appends insert into
:meth:`EventLog.target` and become visible to other readers at :meth:`EventLog.commit`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import duckdb
import pyarrow as pa

from propensity.core.event import ATTRIBUTES_DDL, EVENTS_DDL
from propensity.events.spool import SPOOL_PROGRESS_DDL, pending_segments, spool_dir
from propensity.events.spool import move_spools as move_spool_segments
from propensity.workspace import LOCK_FILENAME, WorkspaceLockedError, file_lock

if TYPE_CHECKING:
    from propensity.events.parquet_log import ParquetEventLog
    from propensity.workspace import Workspace

QUARANTINE_DDL = """
CREATE TABLE IF NOT EXISTS quarantine (
    ingest_id      VARCHAR NOT NULL,
    source         VARCHAR,
    source_file    VARCHAR,
    row_number     BIGINT,
    reason         VARCHAR NOT NULL,
    detail         VARCHAR,
    raw            VARCHAR,
    quarantined_at TIMESTAMPTZ NOT NULL
)
"""

INGESTS_DDL = """
CREATE TABLE IF NOT EXISTS ingests (
    ingest_id    VARCHAR NOT NULL,
    kind         VARCHAR NOT NULL,
    source       VARCHAR,
    source_file  VARCHAR,
    file_sha256  VARCHAR,
    rows_read    BIGINT,
    accepted     BIGINT,
    duplicates   BIGINT,
    quarantined  BIGINT,
    started_at   TIMESTAMPTZ,
    finished_at  TIMESTAMPTZ
)
"""


def connect(path: Path | str, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB connection with the settings the whole product relies on (UTC, bounded memory)."""
    con = duckdb.connect(str(path), read_only=read_only)
    con.execute("SET TimeZone = 'UTC'").fetchall()
    con.execute("SET memory_limit = '1GB'").fetchall()
    con.execute("SET preserve_insertion_order = false").fetchall()
    return con


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Run the block in one DuckDB transaction: committed if it finishes, rolled back if anything escapes it
    (and after a crash DuckDB discards it on restart), so readers see all of it or none of it."""
    con.execute("BEGIN TRANSACTION").fetchall()
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK").fetchall()
        raise
    con.execute("COMMIT").fetchall()


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    for ddl in (EVENTS_DDL, ATTRIBUTES_DDL, QUARANTINE_DDL, INGESTS_DDL, SPOOL_PROGRESS_DDL):
        con.execute(ddl).fetchall()


def read_events(
    con: duckdb.DuckDBPyConnection,
    *,
    customer_ids: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    available_before: datetime | None = None,
) -> pa.Table:
    """Events in ``[start, end)`` of event_time (either bound optional), for some customers or all,
    optionally only those available by ``available_before``; ordered by customer, event_time and event_id."""
    where: list[str] = []
    params: list[object] = []
    if customer_ids is not None:
        where.append("customer_id IN (SELECT unnest(?))")
        params.append(list(customer_ids))
    if start is not None:
        where.append("event_time >= ?")
        params.append(start)
    if end is not None:
        where.append("event_time < ?")
        params.append(end)
    if available_before is not None:
        where.append("available_at <= ?")
        params.append(available_before)
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    return con.sql(
        f"SELECT * FROM events {clause} ORDER BY customer_id, event_time, event_id", params=params
    ).to_arrow_table()


@runtime_checkable
class EventLog(Protocol):
    """What every event log backend offers (the DuckDB tables, the Parquet store)."""

    def count(self) -> int: ...

    def read(
        self,
        *,
        customer_ids: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        available_before: datetime | None = None,
    ) -> pa.Table: ...

    def connection(self, *, read_only: bool = False) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        """A DuckDB connection to the workspace's state where ``events``, ``attributes``, ``quarantine`` read
        this log."""
        ...

    def target(self, table: str) -> str:
        """The table appends to ``events`` / ``attributes`` / ``quarantine`` insert into, in such a connection."""
        ...

    def replace_source(self, con: duckdb.DuckDBPyConnection, source: str) -> None:
        """Forget one attribute source's rows (a reload replaces them), as of the next commit."""
        ...

    def commit(self, con: duckdb.DuckDBPyConnection) -> int:
        """Make the rows appended in ``con`` visible to every reader (with the surrounding transaction)."""
        ...


class DuckDBEventLog:
    """The embedded default: the ``events`` table of a DuckDB file (see :mod:`propensity.workspace`).

    DuckDB lets one process write a file, or several read it, not both; so readers hold the workspace lock shared
    and writers exclusive (:meth:`connection` takes the shared hold itself; writers take
    ``workspace.write_lock()`` around it). A read-write connection first moves the live spools into the log
    (:mod:`propensity.events.spool`), and so does a read-only one when it can have the lock exclusively for a
    moment, so whoever opens the log sees every acknowledged live event.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @property
    def lock_path(self) -> Path:
        return self.path.parent / LOCK_FILENAME

    @property
    def spool_dir(self) -> Path:
        return spool_dir(self.path.parent)

    @contextmanager
    def connection(
        self, *, read_only: bool = False, move_spools: bool = True, timeout_s: float = 600.0
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to the log. Read-write: the caller holds the workspace's write lock. Read-only: this
        takes the lock shared (waiting up to ``timeout_s`` for a writer to finish)."""
        if read_only and not self.path.exists():
            with file_lock(self.lock_path, exclusive=True, timeout_s=timeout_s):
                self._open_write(move_spools=False).close()  # nothing to read yet: create the empty schema
        if read_only:
            if move_spools and pending_segments(self.spool_dir):
                self._try_move()
            with file_lock(self.lock_path, exclusive=False, timeout_s=timeout_s):
                con = connect(self.path, read_only=True)
                try:
                    yield con
                finally:
                    con.close()
            return
        con = self._open_write(move_spools=move_spools)
        try:
            yield con
        finally:
            con.close()

    def target(self, table: str) -> str:
        return table

    def replace_source(self, con: duckdb.DuckDBPyConnection, source: str) -> None:
        con.execute("DELETE FROM attributes WHERE source = ?", [source]).fetchall()

    def commit(self, con: duckdb.DuckDBPyConnection) -> int:
        return 0  # the surrounding DuckDB transaction is the commit

    def _open_write(self, *, move_spools: bool) -> duckdb.DuckDBPyConnection:
        con = connect(self.path)
        try:
            ensure_schema(con)
            if move_spools and pending_segments(self.spool_dir):
                move_spool_segments(con, self.spool_dir)
        except BaseException:
            con.close()
            raise
        return con

    def _try_move(self) -> None:
        """Move the spools in if the lock is free right now (a reader must not wait for it)."""
        try:
            with file_lock(self.lock_path, exclusive=True, timeout_s=0):
                self._open_write(move_spools=True).close()
        except (WorkspaceLockedError, duckdb.Error):  # busy, or this process has the file open already
            pass

    def count(self) -> int:
        with self.connection(read_only=True) as con:
            row = con.execute("SELECT count(*) FROM events").fetchall()[0]
        return int(row[0]) if row else 0

    def read(
        self,
        *,
        customer_ids: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        available_before: datetime | None = None,
    ) -> pa.Table:
        """Events in ``[start, end)`` of event_time (either bound optional), for some customers or all,
        optionally only those available by ``available_before``; ordered by customer and event_time."""
        with self.connection(read_only=True) as con:
            return read_events(
                con, customer_ids=customer_ids, start=start, end=end, available_before=available_before
            )


def storage_of(workspace: Workspace) -> str:
    """``duckdb`` or ``parquet``: the spec's ``storage.events``, or ``PROPENSITY_EVENTS_STORAGE`` when the spec
    has no ``storage:`` section."""
    from propensity.events.parquet_log import environ_storage

    spec = workspace.spec
    if "storage" in spec.model_fields_set:
        return spec.storage.events
    return environ_storage() or spec.storage.events


def open_event_log(workspace: Workspace) -> DuckDBEventLog | ParquetEventLog:
    """The workspace's event log, as its spec's ``storage:`` says (DuckDB tables by default)."""
    from propensity.events.parquet_log import ParquetEventLog

    if storage_of(workspace) == "parquet":
        path = workspace.spec.storage.path
        uri = path if "://" in path else str(workspace.spec.resolve(path))
        return ParquetEventLog(uri, workspace.db_path)
    return DuckDBEventLog(workspace.db_path)


@contextmanager
def open_moved(workspace: Workspace, *, move: bool = True) -> Iterator[tuple[duckdb.DuckDBPyConnection, int]]:
    """A read-write connection to the workspace's event store with every live spool moved in first (the caller
    holds the workspace's write lock); yields it and the events the move inserted."""
    from propensity.events.spool import move_spools

    store = open_event_log(workspace)
    if isinstance(store, DuckDBEventLog):
        with store.connection(move_spools=False) as con:
            inserted = move_spools(con, store.spool_dir).inserted if move else 0
            yield con, inserted
        return
    with store.connection() as con:
        inserted = move_spools(con, spool_dir(workspace.state_dir), log=store).inserted if move else 0
        yield con, inserted
