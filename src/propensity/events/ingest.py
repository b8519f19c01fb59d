"""Bulk ingest: files (or Arrow tables) → validated canonical events in the log, bad rows in quarantine.

One file is one transaction: after a crash the log holds the file completely or not at all, and rerunning the
ingest completes it. Re-ingesting the same file changes nothing: events are deduplicated on ``event_id`` (a
stable hash of the row's content when the source has no id), within the file and against the log.

How a file goes in (:func:`append_events`, the core that every bulk path shares): its rows are validated slice by
slice into one staged table (a Parquet file is read by DuckDB itself, in parallel, a row range at a time; CSV and
JSONL come through :mod:`propensity.events.readers` as Arrow batches); each slice's rejected rows get their raw
source row while the slice is at hand; then, once per file, the valid rows whose id repeats inside the file are
reduced to their first row, the ids the log already holds are found in one pass over the log (a semi-join probed
by the log's ids, built on the file's), and the rest is appended in one ``INSERT``.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from propensity.config.spec import AttributeSource, EventRules, EventSource, ProjectSpec
from propensity.core.errors import PropensityError
from propensity.events.log import EventLog, open_event_log, transaction
from propensity.events.readers import BATCH_ROWS, ROW, UnreadableRecord, detect_format, read_batches
from propensity.events.schema_drift import SAMPLE_ROWS, compare, last_seen, observe, remember
from propensity.events.validate import (
    dedupe_mode,
    define_macros,
    lit,
    q,
    raw_rows_sql,
    staging_sql,
    timestamp_expr,
)
from propensity.workspace import Workspace

Progress = Callable[[int], None]
DEFAULT_SOURCE = EventSource(name="default", path="")
_HASHER = ThreadPoolExecutor(1, thread_name_prefix="ingest-sha256")  # hashlib releases the GIL


# Appends a temp table ``staged`` (see validate.staging_sql) to the log: its valid rows, first row of each event_id
# (a hash aggregate: far cheaper than a window), none already in the log. Parameter: the source name. Bulk and live
# ingest both use it; live adds RETURNING to apply exactly the new events online.
INSERT_STAGED = """
INSERT INTO events
SELECT event_id, customer_id, event_type, event_time, available_at, amount, quantity, currency, sku,
       category, campaign_id, channel, plan, properties, ?, ingest_now()
FROM staged s
SEMI JOIN (SELECT min(row_number) AS first_row FROM staged WHERE reason IS NULL GROUP BY event_id) f
    ON s.row_number = f.first_row
WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = s.event_id)
"""


# dedupe: none. The k-th valid row (k >= 2) of a file with the same id (the source's, or the content hash) gets
# "<id>#<k>": identical lines are all kept, and re-ingesting the same file numbers them the same way, so it still
# adds nothing.
NUMBER_REPEATS = """
CREATE OR REPLACE TEMP TABLE _numbered AS
SELECT * EXCLUDE (_k, event_id), CASE WHEN _k > 1 THEN event_id || '#' || _k ELSE event_id END AS event_id
FROM (
    SELECT *, CASE WHEN reason IS NULL
                   THEN row_number() OVER (PARTITION BY event_id, reason IS NULL ORDER BY row_number) END AS _k
    FROM staged
)
"""
# The valid rows that repeat an id seen earlier in the same staged input (the first row of an id wins). Few, so
# the append below drops them with an equality anti-join (a join with "row <> first row" in it cost ~2x more).
REPEATS = """
CREATE OR REPLACE TEMP TABLE _repeats AS
WITH firsts AS (
    SELECT event_id, min(row_number) AS first_row FROM staged WHERE reason IS NULL
    GROUP BY event_id HAVING count(*) > 1
)
SELECT s.row_number FROM staged s JOIN firsts f USING (event_id)
WHERE s.reason IS NULL AND s.row_number <> f.first_row
"""
# The staged ids the log already holds: one scan of the log's ids probing a hash table of the file's ids.
IN_LOG = """
CREATE OR REPLACE TEMP TABLE _in_log AS
SELECT DISTINCT event_id FROM events WHERE event_id IN (SELECT event_id FROM staged WHERE reason IS NULL)
"""
APPEND = """
INSERT INTO {target}
SELECT event_id, customer_id, event_type, event_time, available_at, amount, quantity, currency, sku,
       category, campaign_id, channel, plan, properties, ?, ingest_now()
FROM staged s
WHERE s.reason IS NULL
  AND NOT EXISTS (SELECT 1 FROM _repeats r WHERE r.row_number = s.row_number)
  AND NOT EXISTS (SELECT 1 FROM _in_log l WHERE l.event_id = s.event_id)
"""
# Rows of a Parquet file per staging statement (DuckDB skips the row groups outside a range).
PARQUET_SLICE_ROWS = 2_000_000


def insert_staged_sql(log: EventLog) -> str:
    """:data:`INSERT_STAGED` into the table the log appends to (``events``, or a Parquet store's staging)."""
    return INSERT_STAGED.replace("INSERT INTO events", f"INSERT INTO {log.target('events')}", 1)


class IngestError(PropensityError):
    """An ingest that cannot start: no such file, no readable format, an unknown source."""


@dataclass
class FileReport:
    """What happened to one file."""

    path: str
    source: str
    rows_read: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    skipped_unchanged: bool = False
    seconds: float = 0.0
    # How the file's columns differ from the source's last-seen schema (events/schema_drift.py), when they do.
    schema_drift: dict[str, Any] | None = None
    schema_drift_text: str = ""
    schema_quarantined: bool = False

    @property
    def note(self) -> str:
        """Why the counts are what they are, when they need a reason (all zero for a skipped file)."""
        if self.skipped_unchanged:
            return "already ingested with the same content: skipped (force=True, or --force, reads it again)"
        return ""


@dataclass
class IngestReport:
    """The summary of one ``ingest`` call across all its files."""

    files: list[FileReport] = field(default_factory=list)
    attributes: dict[str, int] = field(default_factory=dict)  # attribute values loaded per attribute source

    @property
    def rows_read(self) -> int:
        return sum(f.rows_read for f in self.files)

    @property
    def accepted(self) -> int:
        return sum(f.accepted for f in self.files)

    @property
    def duplicates(self) -> int:
        return sum(f.duplicates for f in self.files)

    @property
    def quarantined(self) -> int:
        return sum(f.quarantined for f in self.files)

    @property
    def reasons(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for f in self.files:
            total.update(f.reasons)
        return total

    @property
    def seconds(self) -> float:
        return sum(f.seconds for f in self.files)

    @property
    def skipped(self) -> int:
        """Files already ingested with the same content, so not read again."""
        return sum(1 for f in self.files if f.skipped_unchanged)

    def summary(self) -> str:
        """One line a person can read: the counts, and why they are zero when files were skipped.

        >>> r = IngestReport([FileReport("a.csv", "web", skipped_unchanged=True)])
        >>> r.summary()
        '0 accepted, 0 duplicates, 0 quarantined; 1 of 1 file(s) already ingested with the same content: skipped (force=True, or --force, reads them again)'
        """
        line = f"{self.accepted:,} accepted, {self.duplicates:,} duplicates, {self.quarantined:,} quarantined"
        if self.skipped:
            line += (
                f"; {self.skipped} of {len(self.files)} file(s) already ingested with the same content: skipped "
                "(force=True, or --force, reads them again)"
            )
        if not self.files:
            line += "; no files matched"
        return line


def expand_paths(patterns: Sequence[str | Path], root: Path | None = None) -> list[Path]:
    """Files named by paths, directories (every supported file inside) and globs, in a stable order."""
    found: list[Path] = []
    for pattern in patterns:
        p = Path(pattern).expanduser()
        if root is not None and not p.is_absolute():
            p = root / p
        if any(ch in str(p) for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(str(p), recursive=True))
            matches = [m for m in matches if m.is_file()]
            if not matches:
                raise IngestError(f"{pattern}: no files match this pattern")
            found.extend(matches)
        elif p.is_dir():
            inside = sorted(
                m
                for m in p.rglob("*")
                if m.is_file()
                and m.name.lower()
                .removesuffix(".gz")
                .endswith((".csv", ".tsv", ".parquet", ".pq", ".jsonl", ".ndjson", ".json"))
            )
            if not inside:
                raise IngestError(f"{pattern}: the directory holds no CSV, Parquet or JSONL files")
            found.extend(inside)
        elif p.is_file():
            found.append(p)
        else:
            raise IngestError(f"{pattern}: no such file or directory")
    return list(dict.fromkeys(found))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _source_for(spec: ProjectSpec, path: Path, source_name: str | None) -> EventSource:
    if source_name is not None:
        return spec.source(source_name)
    for source in spec.sources:
        if not source.path:
            continue  # a stream
        pattern = str(spec.resolve(source.path))
        if path.resolve() == Path(pattern).resolve() or Path(path).resolve().match(pattern):
            return source
        if Path(pattern).is_dir() and Path(pattern).resolve() in path.resolve().parents:
            return source
    return DEFAULT_SOURCE


def _insert_quarantine(
    con: duckdb.DuckDBPyConnection,
    ingest_id: str,
    source: str,
    file: str,
    records: list[UnreadableRecord],
    target: str = "quarantine",
) -> None:
    if not records:
        return
    table = pa.table(
        {
            "row_number": pa.array([r.row_number for r in records], pa.int64()),
            "reason": pa.array([r.reason.split(":")[0] for r in records]),
            "detail": pa.array([r.reason for r in records]),
            "raw": pa.array([r.raw for r in records]),
        }
    )
    con.register("unreadable_rows", table)
    con.execute(
        f"""INSERT INTO {target} SELECT ?, ?, ?, row_number, reason, detail, raw, now() FROM unreadable_rows u
           WHERE NOT EXISTS (SELECT 1 FROM quarantine o WHERE o.source_file = ? AND o.row_number = u.row_number
                             AND o.raw = u.raw)""",
        [ingest_id, source, file, file],
    ).fetchall()
    con.unregister("unreadable_rows")


@dataclass(frozen=True)
class Slice:
    """Part of one input, readable as the SQL relation ``relation`` (the source's columns plus ``__row``) while
    the iterator that yielded it has not moved on. ``first_row`` is its first ``__row``."""

    relation: str
    rows: int
    first_row: int


def arrow_slices(con: duckdb.DuckDBPyConnection, batches: Iterable[pa.RecordBatch]) -> Iterator[Slice]:
    """Arrow batches (CSV and JSONL readers, in-memory tables, a stream's spool) as slices, one at a time."""
    for batch in batches:
        if batch.num_rows == 0:
            continue
        con.register("_chunk", pa.Table.from_batches([batch]))
        try:
            yield Slice("_chunk", batch.num_rows, int(batch.column(ROW)[0].as_py()))
        finally:
            con.unregister("_chunk")


def parquet_slices(path: Path, rows: int, slice_rows: int = PARQUET_SLICE_ROWS) -> Iterator[Slice]:
    """A Parquet file read by DuckDB itself (in parallel), ``slice_rows`` rows per slice."""
    source = f"read_parquet({lit(str(path))}, file_row_number = true)"
    for lo in range(0, rows, slice_rows):
        hi = min(lo + slice_rows, rows)
        relation = (
            f"(SELECT * EXCLUDE (file_row_number), file_row_number + 1 AS {ROW} FROM {source} "
            f"WHERE file_row_number >= {lo} AND file_row_number < {hi})"
        )
        yield Slice(relation, hi - lo, lo + 1)


def _duckdb_reads(path: Path, schema: pa.Schema) -> bool:
    """Whether DuckDB can read this Parquet file directly with the same columns the Arrow reader gives."""
    names = [n for n in schema.names if n != ROW]
    return all(n.strip() for n in names) and "file_row_number" not in names


def append_events(
    con: duckdb.DuckDBPyConnection,
    slices: Iterable[Slice],
    schema: pa.Schema,
    source: EventSource,
    rules: EventRules,
    report: FileReport,
    *,
    ingest_id: str,
    log: EventLog,
    live: bool = False,
    unreadable: Sequence[UnreadableRecord] = (),
    progress: Progress | None = None,
    quarantine_all: tuple[str, str] | None = None,
) -> None:
    """Validate ``slices`` (one input: a file, a table, a spool segment) and append its new events to ``log``.

    The caller holds the transaction, so the input is appended completely or not at all, and has defined the
    macros (:func:`~propensity.events.validate.define_macros`). Invalid rows go to quarantine with their reason
    and raw row; valid rows are deduplicated on ``event_id`` within the input (the first row wins; ``dedupe:
    none`` numbers repeats instead) and against the log. ``report`` is updated with what happened.
    ``quarantine_all`` (reason, detail) sends every row to the quarantine (a source whose schema drifted).
    """
    try:
        keep_all = dedupe_mode(source, schema) == "none"
    except ValueError as exc:
        raise IngestError(str(exc)) from None
    staged = False
    for piece in slices:
        sql = staging_sql(piece.relation, schema, source, rules, now_sql="ingest_now()", live=live)
        verb = "INSERT INTO staged" if staged else "CREATE OR REPLACE TEMP TABLE staged AS"
        con.execute(f"{verb} {sql}").fetchall()
        staged = True
        if quarantine_all is not None:
            con.execute(
                f"UPDATE staged SET reason = ?, detail = ? WHERE reason IS NULL AND row_number >= {piece.first_row}",
                list(quarantine_all),
            ).fetchall()
        # The raw source row of each rejected row, while this slice is readable (rare: no work when none).
        this_slice = (
            f"(SELECT row_number FROM staged WHERE reason IS NOT NULL AND row_number >= {piece.first_row})"
        )
        bad = con.execute(f"SELECT count(*) FROM {this_slice}").fetchall()[0][0]
        if bad:
            con.execute(
                f"UPDATE staged SET raw = r.raw FROM ({raw_rows_sql(piece.relation, schema, this_slice)}) r "
                "WHERE staged.row_number = r.row_number"
            ).fetchall()
        report.rows_read += piece.rows
        if progress:
            progress(piece.rows)
        _trace(report.path, report.rows_read)
    if staged:
        if keep_all:
            con.execute(NUMBER_REPEATS).fetchall()
            con.execute("DROP TABLE staged").fetchall()
            con.execute("ALTER TABLE _numbered RENAME TO staged").fetchall()
        valid, bad = con.execute(
            "SELECT count(*) FILTER (WHERE reason IS NULL), count(*) FILTER (WHERE reason IS NOT NULL) FROM staged"
        ).fetchall()[0]
        if bad:
            for reason, n in con.execute(
                "SELECT reason, count(*) FROM staged WHERE reason IS NOT NULL GROUP BY reason"
            ).fetchall():
                report.reasons[reason] += int(n)
            con.execute(
                f"""INSERT INTO {log.target("quarantine")} SELECT ?, ?, ?, row_number, reason, detail, raw,
                   ingest_now()
                   FROM staged s WHERE reason IS NOT NULL AND NOT EXISTS (
                       SELECT 1 FROM quarantine o WHERE o.source_file = ? AND o.row_number = s.row_number
                       AND o.raw = s.raw)""",
                [ingest_id, source.name, report.path, report.path],
            ).fetchall()
        con.execute(REPEATS).fetchall()
        log_empty = not con.execute("SELECT 1 FROM events LIMIT 1").fetchall()
        if log_empty:
            con.execute("CREATE OR REPLACE TEMP TABLE _in_log (event_id VARCHAR)").fetchall()
        else:
            con.execute(IN_LOG).fetchall()
        inserted = con.execute(APPEND.format(target=log.target("events")), [source.name]).fetchall()[0]
        accepted = int(inserted[0]) if inserted else 0
        report.accepted += accepted
        report.duplicates += int(valid) - accepted
        report.quarantined += int(bad)
        for table in ("staged", "_repeats", "_in_log"):
            con.execute(f"DROP TABLE IF EXISTS {table}").fetchall()
    if unreadable:
        _insert_quarantine(
            con, ingest_id, source.name, report.path, list(unreadable), log.target("quarantine")
        )
        report.rows_read += len(unreadable)
        report.quarantined += len(unreadable)
        for record in unreadable:
            report.reasons[record.reason.split(":")[0]] += 1


def _trace(path: str, rows: int) -> None:
    # Crash-recovery tests need to kill an ingest mid-file, deterministically: with PROPENSITY_INGEST_TRACE set,
    # every batch staged (not yet committed) appends a line to that file.
    trace = os.environ.get("PROPENSITY_INGEST_TRACE")
    if trace:
        with open(trace, "a", encoding="utf-8") as f:
            f.write(f"{path}\t{rows}\n")


def ingest_files(
    workspace: Workspace,
    paths: Sequence[str | Path],
    *,
    source: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    force: bool = False,
    accept_schema: bool = False,
) -> IngestReport:
    """Ingest files into the workspace's event log; return what happened to each.

    ``source`` names a declared source whose mapping to use; otherwise each file uses the declared source whose
    path matches it, or the canonical column names. ``progress(file, rows_done, rows_total)`` is called as
    batches land (``rows_total`` is 0 when unknown). A file whose content was already fully ingested is skipped
    unless ``force``. A declared source's columns are compared with its last-seen schema
    (:mod:`propensity.events.schema_drift`); ``accept_schema`` accepts a change its ``schema_drift: quarantine``
    policy would quarantine.
    """
    spec = workspace.spec
    files = expand_paths(paths, root=Path.cwd())
    report = IngestReport()
    log = open_event_log(workspace)
    for path in files:
        chosen = _source_for(spec, path, source)
        file_report = FileReport(path=str(path), source=chosen.name)
        report.files.append(file_report)
        started = time.perf_counter()
        fmt = chosen.format if chosen.format != "auto" else detect_format(path)
        # The file's checksum (is it already in?) is read on a thread while the schema is opened.
        hashing = _HASHER.submit(_sha256, path)
        unreadable: list[UnreadableRecord] = []
        batch_rows = os.environ.get("PROPENSITY_INGEST_BATCH_ROWS")
        schema, batches = read_batches(
            path,
            fmt,
            batch_rows=int(batch_rows or BATCH_ROWS),
            delimiter=chosen.csv.delimiter,
            quote=chosen.csv.quote,
            header=chosen.csv.header,
            on_unreadable=unreadable.append,
        )
        total = _row_estimate(path, fmt)
        direct = fmt == "parquet" and _duckdb_reads(path, schema)
        columns: dict[str, str] | None = None
        if any(s.name == chosen.name for s in spec.sources):
            sample, batches = _sample(path, fmt, batches)
            columns = observe(schema, sample, skip=(ROW,))
        digest = hashing.result()
        done = 0

        def tick(n: int, _path: Path = path, _total: int = total) -> None:
            nonlocal done
            done += n
            if progress:
                progress(str(_path), done, _total)

        with workspace.write_lock(), log.connection() as con:
            if not force:
                seen = con.execute(
                    "SELECT count(*) FROM ingests WHERE file_sha256 = ? AND source = ?", [digest, chosen.name]
                ).fetchall()[0]
                if seen and seen[0]:
                    file_report.skipped_unchanged = True
                    file_report.seconds = time.perf_counter() - started
                    continue
            ingest_id = uuid.uuid4().hex
            hold = _schema_check(workspace, chosen, columns, file_report, accept_schema)
            with transaction(con):
                define_macros(con)
                slices = (
                    parquet_slices(path, total, int(batch_rows or PARQUET_SLICE_ROWS))
                    if direct
                    else arrow_slices(con, batches)
                )
                append_events(
                    con, slices, schema, chosen, spec.events, file_report, ingest_id=ingest_id, log=log,
                    unreadable=unreadable, progress=tick,
                    quarantine_all=("schema_drift", file_report.schema_drift_text) if hold else None,
                )  # fmt: skip
                log.commit(con)
                if (
                    not hold
                ):  # a held file is not recorded as ingested: once its change is accepted, it goes in
                    con.execute(
                        "INSERT INTO ingests VALUES (?, 'events', ?, ?, ?, ?, ?, ?, ?, ?, now())",
                        [
                            ingest_id, chosen.name, str(path), digest, file_report.rows_read,
                            file_report.accepted, file_report.duplicates, file_report.quarantined,
                            _started_ts(started),
                        ],
                    ).fetchall()  # fmt: skip
            if columns is not None and not hold:
                remember(workspace, chosen.name, columns, file=str(path))
        file_report.seconds = time.perf_counter() - started
    return report


def _sample(
    path: Path, fmt: str, batches: Iterator[pa.RecordBatch]
) -> tuple[pa.RecordBatch | None, Iterator[pa.RecordBatch]]:
    """A first batch to classify the columns by (Parquet: a small read of its own; else the first batch, put
    back in front of the others)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        first = next(pq.ParquetFile(path).iter_batches(batch_size=SAMPLE_ROWS), None)
        return first, batches
    first = next(batches, None)
    if first is None:
        return None, iter(())
    return first, itertools.chain([first], batches)


def _schema_check(
    workspace: Workspace,
    source: EventSource,
    columns: dict[str, str] | None,
    report: FileReport,
    accept: bool,
) -> bool:
    """Compare a file's columns with the source's last-seen ones and report the change; True when the source's
    policy holds the file back (its rows go to the quarantine)."""
    if columns is None:
        return False
    previous = last_seen(workspace, source.name)
    if previous is None:
        return False
    drift = compare(previous, columns)
    if not drift.changed:
        return False
    report.schema_drift = drift.to_json()
    report.schema_drift_text = (
        f"source {source.name}: columns changed since the last ingest: {drift.describe()}"
    )
    report.schema_quarantined = source.schema_drift == "quarantine" and not accept
    return report.schema_quarantined


def ingest_table(
    workspace: Workspace, table: Any, *, source: str | None = None, live: bool = False
) -> IngestReport:
    """Ingest a table of events (the Python API's in-memory path), with the same validation and dedupe.

    ``table`` is an Arrow table or any frame :func:`propensity.core.frames.to_arrow` reads (pandas, Polars).
    ``live`` marks events as arriving now: their ``available_at`` is the ingest time, not ``event_time``.
    """
    from propensity.core.frames import to_arrow

    table = to_arrow(table, what="events")
    spec = workspace.spec
    chosen = spec.source(source) if source else DEFAULT_SOURCE
    rows = pa.array(range(1, table.num_rows + 1), type=pa.int64())
    table = table.append_column(ROW, rows)
    file_report = FileReport(path="<table>", source=chosen.name)
    report = IngestReport([file_report])
    started = time.perf_counter()
    log = open_event_log(workspace)
    with workspace.write_lock(), log.connection() as con:
        ingest_id = uuid.uuid4().hex
        with transaction(con):
            define_macros(con)
            append_events(
                con, arrow_slices(con, table.to_batches()), table.schema, chosen, spec.events, file_report,
                ingest_id=ingest_id, log=log, live=live,
            )  # fmt: skip
            log.commit(con)
            con.execute(
                "INSERT INTO ingests VALUES (?, 'events', ?, '<table>', NULL, ?, ?, ?, ?, ?, now())",
                [ingest_id, chosen.name, file_report.rows_read, file_report.accepted, file_report.duplicates,
                 file_report.quarantined, _started_ts(started)],
            ).fetchall()  # fmt: skip
    file_report.seconds = time.perf_counter() - started
    return report


def _started_ts(perf_start: float) -> str:
    from datetime import UTC, datetime, timedelta

    return (datetime.now(UTC) - timedelta(seconds=time.perf_counter() - perf_start)).isoformat()


def _row_estimate(path: Path, fmt: str) -> int:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    return 0


def attribute_text(column: str, dtype: pa.DataType, zone: str) -> str:
    """SQL giving an attribute's value as text; timestamps become ISO 8601 in UTC (``2024-05-01T12:30:00.000000Z``).

    Attribute values are stored as text, so a typed timestamp must be written in the one form every reader parses
    (the feature engines' ``days_since``), not in DuckDB's display form (``2024-05-01 12:30:00+00``).
    """
    c = q(column)
    if pa.types.is_timestamp(dtype):
        instant = f"CAST({c} AS TIMESTAMPTZ)" if dtype.tz is not None else f"timezone({lit(zone)}, {c})"
        return f"strftime({instant}, '%Y-%m-%dT%H:%M:%S.%fZ')"
    return f"CAST({c} AS VARCHAR)"


def ingest_attributes(workspace: Workspace, attribute_source: AttributeSource) -> int:
    """Load one declared attribute source into the long-form ``attributes`` table; return rows written.

    Re-loading replaces that source's rows in one transaction (attributes are a snapshot of the source, not a
    log), so the table never holds a half-loaded source.
    """
    spec = workspace.spec

    def inputs() -> Iterator[tuple[str | Path, pa.Schema, Iterable[pa.RecordBatch]]]:
        if attribute_source.sql is not None:  # a warehouse query, read whole (attributes are a snapshot)
            from propensity.events.warehouse import read_query

            table = read_query(attribute_source.sql, what=f"attributes[{attribute_source.name}]")
            yield f"sql:{attribute_source.name}", table.schema, table.to_batches()
            return
        for path in expand_paths([attribute_source.path], root=spec.root):
            fmt = attribute_source.format if attribute_source.format != "auto" else detect_format(path)
            schema, batches = read_batches(
                path, fmt, delimiter=attribute_source.csv.delimiter, quote=attribute_source.csv.quote,
                header=attribute_source.csv.header,
            )  # fmt: skip
            yield path, schema, batches

    sources = list(inputs()) if attribute_source.sql is not None else inputs()
    log = open_event_log(workspace)
    written = 0
    with workspace.write_lock(), log.connection() as con, transaction(con):
        log.replace_source(con, attribute_source.name)
        for path, schema, batches in sources:
            names = [n for n in schema.names if n != ROW]
            if attribute_source.customer_id not in names:
                raise IngestError(
                    f"attributes[{attribute_source.name}]: {path} has no column "
                    f"{attribute_source.customer_id!r} (set `customer_id:` to the id column)"
                )
            if attribute_source.valid_from and attribute_source.valid_from not in names:
                raise IngestError(
                    f"attributes[{attribute_source.name}]: {path} has no column "
                    f"{attribute_source.valid_from!r} (the `valid_from:` column)"
                )
            keep = attribute_source.attributes or [
                n for n in names if n not in (attribute_source.customer_id, attribute_source.valid_from)
            ]
            missing = [k for k in keep if k not in names]
            if missing:
                raise IngestError(
                    f"attributes[{attribute_source.name}]: {path} lacks column(s) {', '.join(missing)}"
                )
            vf = (
                timestamp_expr(
                    attribute_source.valid_from,
                    schema.field(attribute_source.valid_from).type,
                    zone=attribute_source.timezone,
                    fmt=attribute_source.timestamp_format,
                )
                if attribute_source.valid_from
                else "TIMESTAMPTZ '1970-01-01 00:00:00+00'"
            )
            unpivot = " UNION ALL ".join(
                f"SELECT cid, {lit(k)} AS attribute, "
                f"{attribute_text(k, schema.field(k).type, attribute_source.timezone)} AS value, vf FROM base"
                for k in keep
            )
            for batch in batches:
                chunk = pa.Table.from_batches([batch])
                con.register("chunk", chunk)
                result = con.execute(
                    f"""
                    INSERT INTO {log.target("attributes")}
                    WITH base AS (
                        SELECT NULLIF(trim(CAST({q(attribute_source.customer_id)} AS VARCHAR)), '') AS cid,
                               {vf} AS vf, *
                        FROM chunk
                    )
                    SELECT cid, attribute, value, vf, vf, ?, now()
                    FROM ({unpivot}) WHERE cid IS NOT NULL AND vf IS NOT NULL
                    """,
                    [attribute_source.name],
                ).fetchall()[0]
                con.unregister("chunk")
                written += int(result[0]) if result else 0
        log.commit(con)
    return written


def iter_declared_paths(spec: ProjectSpec) -> Iterator[tuple[EventSource, list[Path]]]:
    """Each declared event source with the files its path currently matches."""
    for source in spec.sources:
        if source.path:  # streams are consumed by `propensity stream`
            yield source, expand_paths([source.path], root=spec.root)
