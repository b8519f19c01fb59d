"""The event log as Parquet files that DuckDB and Spark both read: events, attributes and quarantine.

Layout under the store's root (a local folder or an object-store URI such as ``s3://bucket/prefix``)::

    events/event_date=2024-05-01/<commit>-<n>.parquet      canonical events (EVENT_SCHEMA), by UTC event date
    attributes/source=<name>/<commit>.parquet              customer attribute versions, one file set per source
    quarantine/<commit>.parquet                            rejected rows
    _manifests/000000000042.json                           commit 42: every live file of every table

**Atomic appends.** A writer writes new data files under fresh names, then commits by writing the next manifest
(to a temporary name, then renamed into place). Readers open the newest manifest and read exactly the files it
lists, so a half-written file, or the files of a crashed writer, are never seen. Writers hold the workspace's
write lock, so versions never race.

**The same rules as the DuckDB log.** Rows are staged, validated and deduplicated by the same SQL
(:mod:`propensity.events.ingest`): in a DuckDB connection from :meth:`ParquetEventLog.connection`, ``events``,
``attributes`` and ``quarantine`` are views over the committed files plus the rows staged in this transaction,
and appends go to staging tables (:meth:`ParquetEventLog.target`) that :meth:`ParquetEventLog.commit` writes out.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from propensity.core.event import ATTRIBUTES_DDL, EVENT_SCHEMA, EVENTS_DDL, UTC_TS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

MANIFESTS = "_manifests"
TABLES = ("events", "attributes", "quarantine")

ATTRIBUTES_SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.string(), nullable=False),
        pa.field("attribute", pa.string(), nullable=False),
        pa.field("value", pa.string()),
        pa.field("valid_from", UTC_TS, nullable=False),
        pa.field("available_at", UTC_TS, nullable=False),
        pa.field("source", pa.string()),
        pa.field("ingested_at", UTC_TS, nullable=False),
    ]
)
QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("ingest_id", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("source_file", pa.string()),
        pa.field("row_number", pa.int64()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
        pa.field("raw", pa.string()),
        pa.field("quarantined_at", UTC_TS, nullable=False),
    ]
)
SCHEMAS = {"events": EVENT_SCHEMA, "attributes": ATTRIBUTES_SCHEMA, "quarantine": QUARANTINE_SCHEMA}

_QUARANTINE_DDL = """CREATE TABLE IF NOT EXISTS quarantine (ingest_id VARCHAR NOT NULL, source VARCHAR,
    source_file VARCHAR, row_number BIGINT, reason VARCHAR NOT NULL, detail VARCHAR, raw VARCHAR,
    quarantined_at TIMESTAMPTZ NOT NULL)"""
_DDL = {"events": EVENTS_DDL, "attributes": ATTRIBUTES_DDL, "quarantine": _QUARANTINE_DDL}


@dataclass
class Manifest:
    """One committed version of the store: the live files of each table (paths relative to the root)."""

    version: int = 0
    committed_at: str | None = None
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: {t: [] for t in TABLES})

    def rows(self, table: str) -> int:
        return sum(int(f["rows"]) for f in self.tables.get(table, []))

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "committed_at": self.committed_at, "tables": self.tables}


def _pending(table: str) -> str:
    return f"_pending_{table}"


class ParquetEventLog:
    """Events, attributes and quarantine as Parquet under ``uri``, with ``state_db`` (the workspace's DuckDB
    file) holding everything else (ingest bookkeeping, materialised features, scores)."""

    def __init__(self, uri: str | Path, state_db: Path | str) -> None:
        text = str(uri)
        if "://" in text and not text.startswith("file://"):
            self.fs, root = pafs.FileSystem.from_uri(text)
            scheme = text.split("://", 1)[0]
            self.location = f"{scheme}://{root}"
        else:
            root = str(Path(text.removeprefix("file://")).expanduser().resolve())
            self.fs = pafs.LocalFileSystem()
            self.location = root
        self.root = root.rstrip("/")
        self.state_db = Path(state_db)
        self._replaced: set[str | None] = set()

    # ------------------------------------------------------------------------------------------ manifests
    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def url(self, rel: str) -> str:
        """Where a reader finds a file listed in the manifest (a local path, or a URI)."""
        return f"{self.location}/{rel}"

    def manifest(self) -> Manifest:
        """The newest committed manifest (an empty one before the first commit)."""
        selector = pafs.FileSelector(self._path(MANIFESTS), allow_not_found=True)
        versions = [
            int(info.base_name[:-5])
            for info in self.fs.get_file_info(selector)
            if info.base_name.endswith(".json") and info.base_name[:-5].isdigit()
        ]
        if not versions:
            return Manifest()
        with self.fs.open_input_stream(self._path(f"{MANIFESTS}/{max(versions):012d}.json")) as f:
            data = json.loads(f.read().decode("utf-8"))
        tables = {t: list(data.get("tables", {}).get(t, [])) for t in TABLES}
        return Manifest(int(data["version"]), data.get("committed_at"), tables)

    def _write_manifest(self, manifest: Manifest) -> None:
        self.fs.create_dir(self._path(MANIFESTS), recursive=True)
        final = self._path(f"{MANIFESTS}/{manifest.version:012d}.json")
        if self.fs.get_file_info(final).type != pafs.FileType.NotFound:
            raise RuntimeError(
                f"{final}: manifest version {manifest.version} already exists (concurrent writer)"
            )
        tmp = f"{final}.tmp-{uuid.uuid4().hex}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(json.dumps(manifest.to_json(), indent=1).encode("utf-8"))
        self.fs.move(tmp, final)

    def files(self, table: str, manifest: Manifest | None = None) -> list[str]:
        """The readable locations of a table's live files."""
        m = manifest or self.manifest()
        return [self.url(f["path"]) for f in m.tables.get(table, [])]

    # ----------------------------------------------------------------------------------------- the protocol
    def count(self) -> int:
        return self.manifest().rows("events")

    def read(
        self,
        *,
        customer_ids: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        available_before: datetime | None = None,
    ) -> pa.Table:
        """As :meth:`propensity.events.log.DuckDBEventLog.read` (the same query, over the files)."""
        from propensity.events.log import read_events

        with self.connection(read_only=True) as con:
            return read_events(
                con, customer_ids=customer_ids, start=start, end=end, available_before=available_before
            )

    @contextmanager
    def connection(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A DuckDB connection to the workspace's state in which ``events``, ``attributes`` and ``quarantine``
        read this store (committed files plus rows staged in this connection)."""
        from propensity.events.log import connect, ensure_schema

        if read_only and not self.state_db.exists():
            read_only = False
        con = connect(self.state_db, read_only=read_only)
        try:
            if not read_only:
                ensure_schema(con)
            for table in TABLES:
                ddl = _DDL[table].replace(f"EXISTS {table} (", f"EXISTS temp.{_pending(table)} (")
                con.execute(ddl.replace("CREATE TABLE", "CREATE TEMP TABLE")).fetchall()
            self._replaced = set()
            self.refresh(con)
            yield con
        finally:
            con.close()

    def refresh(self, con: duckdb.DuckDBPyConnection, manifest: Manifest | None = None) -> None:
        """(Re)define the three views over the newest manifest's files and the staged rows."""
        m = manifest or self.manifest()
        for table in TABLES:
            entries = m.tables.get(table, [])
            if table == "attributes" and self._replaced:
                entries = [e for e in entries if e.get("source") not in self._replaced]
            cols = ", ".join(
                "CAST(properties AS JSON) AS properties" if f.name == "properties" else f'"{f.name}"'
                for f in SCHEMAS[table]
            )
            parts = [f"SELECT * FROM temp.{_pending(table)}"]
            if entries:
                files = ", ".join("'" + self.url(e["path"]).replace("'", "''") + "'" for e in entries)
                parts.insert(0, f"SELECT {cols} FROM read_parquet([{files}], hive_partitioning = false)")
            con.execute(f"CREATE OR REPLACE TEMP VIEW {table} AS " + " UNION ALL ".join(parts)).fetchall()

    def target(self, table: str) -> str:
        """The table that appends to ``table`` insert into, in a connection from :meth:`connection`."""
        return f"temp.{_pending(table)}"

    def replace_source(self, con: duckdb.DuckDBPyConnection, source: str) -> None:
        """Drop a source's attribute versions (a reload replaces them) as of the next commit."""
        self._replaced.add(source)
        con.execute(f"DELETE FROM temp.{_pending('attributes')} WHERE source = ?", [source]).fetchall()
        self.refresh(con)

    def commit(self, con: duckdb.DuckDBPyConnection) -> int:
        """Write the staged rows as new files and commit the next manifest; return the version (unchanged
        when nothing was staged)."""
        m = self.manifest()
        stamp = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}"
        added: dict[str, list[dict[str, Any]]] = {t: [] for t in TABLES}
        added["events"] = self._write_events(con, stamp)
        added["attributes"] = self._write_grouped(con, "attributes", stamp)
        added["quarantine"] = self._write_grouped(con, "quarantine", stamp)
        if not any(added.values()) and not self._replaced:
            return m.version
        tables = {}
        for t in TABLES:
            keep = m.tables.get(t, [])
            if t == "attributes" and self._replaced:
                keep = [e for e in keep if e.get("source") not in self._replaced]
            tables[t] = keep + added[t]
        new = Manifest(m.version + 1, datetime.now(UTC).isoformat(), tables)
        self._write_manifest(new)
        for t in TABLES:
            con.execute(f"DELETE FROM temp.{_pending(t)}").fetchall()
        self._replaced = set()
        self.refresh(con, new)
        return new.version

    def _select(self, table: str) -> str:
        cols = ", ".join(
            "CAST(properties AS VARCHAR) AS properties" if f.name == "properties" else f'"{f.name}"'
            for f in SCHEMAS[table]
        )
        return f"SELECT {cols} FROM temp.{_pending(table)}"

    def _write_events(self, con: duckdb.DuckDBPyConnection, stamp: str) -> list[dict[str, Any]]:
        # Sorted by date (then customer, so each file's row groups cover few customers); one file per date.
        reader = con.sql(
            f"SELECT * FROM ({self._select('events')}) ORDER BY event_time::DATE, customer_id, event_time"
        ).to_arrow_reader(100_000)
        out: list[dict[str, Any]] = []
        writer: pq.ParquetWriter | None = None
        current: str | None = None
        rows = 0
        rel = ""

        def close() -> None:
            nonlocal writer
            if writer is not None:
                writer.close()
                out.append({"path": rel, "rows": rows, "date": current})
                writer = None

        for batch in reader:
            table = pa.Table.from_batches([batch]).cast(EVENT_SCHEMA)
            days = pc.strftime(table.column("event_time"), format="%Y-%m-%d")
            for day in pc.unique(days).to_pylist():  # sorted input: each day's rows are one run
                part = table.filter(pc.equal(days, day))
                if day != current:
                    close()
                    current, rows = day, 0
                    rel = f"events/event_date={day}/{stamp}.parquet"
                    self.fs.create_dir(self._path(f"events/event_date={day}"), recursive=True)
                    writer = pq.ParquetWriter(
                        self._path(rel), EVENT_SCHEMA, filesystem=self.fs, compression="zstd"
                    )
                assert writer is not None
                writer.write_table(part, row_group_size=1_000_000)
                rows += part.num_rows
        close()
        return out

    def _write_grouped(self, con: duckdb.DuckDBPyConnection, table: str, stamp: str) -> list[dict[str, Any]]:
        data = con.sql(self._select(table)).to_arrow_table()
        if data.num_rows == 0:
            return []
        data = data.cast(SCHEMAS[table])
        if table == "quarantine":
            rel = f"quarantine/{stamp}.parquet"
            self.fs.create_dir(self._path("quarantine"), recursive=True)
            pq.write_table(data, self._path(rel), filesystem=self.fs, compression="zstd")
            return [{"path": rel, "rows": data.num_rows}]
        out = []
        for source in pc.unique(data.column("source")).to_pylist():
            part = data.filter(
                pc.is_null(data.column("source"))
                if source is None
                else pc.equal(data.column("source"), source)
            )
            folder = f"attributes/source={_safe(source)}"
            rel = f"{folder}/{stamp}.parquet"
            self.fs.create_dir(self._path(folder), recursive=True)
            pq.write_table(part, self._path(rel), filesystem=self.fs, compression="zstd")
            out.append({"path": rel, "rows": part.num_rows, "source": source})
        return out

    # ------------------------------------------------------------------------------------------------ Spark
    def spark_frames(self, spark: SparkSession) -> tuple[DataFrame, DataFrame]:
        """``(events, attributes)`` as Spark DataFrames over the newest manifest's files."""
        m = self.manifest()
        return self.spark_frame(spark, "events", m), self.spark_frame(spark, "attributes", m)

    def spark_frame(self, spark: SparkSession, table: str, manifest: Manifest | None = None) -> DataFrame:
        files = self.files(table, manifest)
        if not files:
            return spark.createDataFrame(SCHEMAS[table].empty_table())
        return spark.read.schema(_spark_schema(spark, table)).parquet(*files)


def _safe(value: str | None) -> str:
    if value is None:
        return "__null__"
    return "".join(c if c.isalnum() or c in "-_." else f"%{ord(c):02X}" for c in value)


def _spark_schema(spark: SparkSession, table: str) -> Any:
    return spark.createDataFrame(SCHEMAS[table].empty_table()).schema


def default_path(state_dir: Path) -> Path:
    return state_dir / "events"


def environ_storage() -> str | None:
    """``PROPENSITY_EVENTS_STORAGE`` (duckdb | parquet): the storage of a workspace whose spec is silent."""
    value = os.environ.get("PROPENSITY_EVENTS_STORAGE")
    return value if value in ("duckdb", "parquet") else None


def export_to_parquet(workspace_db: Path, target: ParquetEventLog) -> Manifest:
    """Copy a DuckDB log (events, attributes, quarantine of ``workspace_db``) into ``target`` as one commit.

    The target must be empty (a fresh store); the DuckDB tables are left as they are, so a workspace can switch
    to ``storage: {events: parquet}`` once the copy is verified (``propensity events export --to parquet``).
    """
    from propensity.events.log import connect, ensure_schema

    if target.manifest().version:
        raise ValueError(
            f"{target.location} already holds a committed event store; export into an empty path"
        )
    src = connect(workspace_db, read_only=False)
    try:
        ensure_schema(src)
        with target.connection() as con:
            for table in TABLES:
                cols = ", ".join(f'"{f.name}"' for f in SCHEMAS[table])
                # Copy in Arrow batches through the staging tables: memory stays bounded.
                reader = src.sql(f"SELECT {cols} FROM {table}").to_arrow_reader(200_000)
                for batch in reader:
                    con.register("_export_batch", pa.Table.from_batches([batch]))
                    con.execute(f"INSERT INTO {target.target(table)} SELECT * FROM _export_batch").fetchall()
                    con.unregister("_export_batch")
            target.commit(con)
    finally:
        src.close()
    return target.manifest()
