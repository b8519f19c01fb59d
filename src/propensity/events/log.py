"""The event log: append-only storage of canonical events, and the reads later stages need.

:class:`EventLog` is the small interface every backend honours; :class:`DuckDBEventLog` is the embedded default,
a table in the workspace's DuckDB file. Appends are transactional: a batch (a whole file, for bulk ingest) is in
the log completely or not at all, even if the process is killed mid-write.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

import duckdb
import pyarrow as pa

from propensity.core.event import ATTRIBUTES_DDL, EVENTS_DDL

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
    for ddl in (EVENTS_DDL, ATTRIBUTES_DDL, QUARANTINE_DDL, INGESTS_DDL):
        con.execute(ddl).fetchall()


@runtime_checkable
class EventLog(Protocol):
    """What every event log backend offers."""

    def count(self) -> int: ...

    def read(
        self,
        *,
        customer_ids: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        available_before: datetime | None = None,
    ) -> pa.Table: ...


class DuckDBEventLog:
    """The embedded default: the ``events`` table of a DuckDB file (see :mod:`propensity.workspace`)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    @contextmanager
    def connection(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        if read_only and not self.path.exists():
            read_only = False  # nothing to read yet: create the empty schema
        con = connect(self.path, read_only=read_only)
        try:
            if not read_only:
                ensure_schema(con)
            yield con
        finally:
            con.close()

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
        with self.connection(read_only=True) as con:
            return con.sql(
                f"SELECT * FROM events {clause} ORDER BY customer_id, event_time, event_id", params=params
            ).to_arrow_table()
