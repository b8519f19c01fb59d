"""Live ingest, the reusable core: events that arrive one batch at a time (the HTTP API, Kafka, Redis Streams)
→ validated by the bulk ingest's own SQL → deduplicated → durable in this process's spool → handed back to be
applied online.

Nothing here opens the workspace's DuckDB file: validation runs on an in-memory DuckDB connection of this process,
and the batch is durable once its spool record is fsync'd (see :mod:`propensity.events.spool`); whichever process
next holds the database moves the spool into the log. So a server or a stream consumer can acknowledge tens of
thousands of events a second while CLI commands use the workspace.

**Dedupe.** The log deduplicates exactly when the spool is moved in (the first copy of an ``event_id`` wins). For
what is applied online the process keeps an :class:`EventIdIndex`, the 64-bit hash of every event id in the log
(loaded at start, 8 bytes per event) and of every id accepted since: an event whose id it holds is acknowledged as
a duplicate and not applied again, so a retried HTTP batch or a redelivered stream message never counts twice.

**Two policies for bad input.** An HTTP batch with any invalid event is rejected whole (:class:`RejectedBatch`,
nothing written: the client is there to fix it). A stream cannot be answered, so its bad records go to the
quarantine (through the spool, with the topic, partition and offset they came from) and the rest are accepted.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from propensity.config.spec import EventRules, EventSource
from propensity.core.errors import PropensityError
from propensity.core.event import CORE_FIELDS, EVENT_SCHEMA, PROPERTY_FIELDS
from propensity.events.readers import ROW
from propensity.events.spool import KIND_EVENTS, KIND_QUARANTINE, SpoolWriter
from propensity.events.validate import define_macros, staging_sql

LIVE_SOURCE = EventSource(name="api", path="")
MAX_BATCH = 10_000
_KNOWN = frozenset((*CORE_FIELDS, *PROPERTY_FIELDS))
# Extra keys become columns of the staging SQL (then keys of `properties`): no empty or control-character names.
_FIELD_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")

# What a spool record of events holds: the log's columns, ingested_at excepted (set when moved into the log).
SPOOL_EVENT_SCHEMA = pa.schema(
    [f if f.name != "properties" else pa.field("properties", pa.string()) for f in EVENT_SCHEMA]
).remove(len(EVENT_SCHEMA) - 1)
QUARANTINE_SCHEMA = pa.schema(
    [
        ("ingest_id", pa.string()),
        ("source", pa.string()),
        ("source_file", pa.string()),
        ("row_number", pa.int64()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw", pa.string()),
    ]
)
_EVENT_COLUMNS = ", ".join(n for n in SPOOL_EVENT_SCHEMA.names if n not in ("properties", "source"))


@dataclass
class FieldError:
    index: int  # the event's position in the batch (0-based)
    field: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "field": self.field, "message": self.message}


class RejectedBatch(PropensityError):
    """A live batch with invalid events: nothing was written. ``errors`` name each event and field."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"event {first.index}: {first.field}: {first.message}{more}; nothing was written")


def _cell(index: int, name: str, value: Any, errors: list[FieldError]) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return repr(value)
    if name not in _KNOWN:
        return json.dumps(value, separators=(",", ":"))  # nested extras are kept as JSON text
    errors.append(FieldError(index, name, f"must be a string or a number, got {type(value).__name__}"))
    return None


def event_columns(events: Sequence[Any], *, fast: bool = True) -> tuple[pa.Table, list[FieldError]]:
    """JSON events → a table of text columns (the shape of a CSV) and the JSON-level errors found (by index).

    Typed fields are parsed by the shared validation SQL; keys of a ``properties`` object and unknown top-level
    keys become extra columns, which the log keeps in ``properties``.
    """
    quick = _flat_columns(events) if fast else None  # ``fast=False``: the general loop (for tests)
    if quick is not None:
        return quick, []
    errors: list[FieldError] = []
    columns: dict[str, list[str | None]] = {}
    n = len(events)
    for i, ev in enumerate(events):
        if not isinstance(ev, Mapping):
            errors.append(FieldError(i, "event", f"must be a JSON object, got {type(ev).__name__}"))
            continue
        flat: dict[str, Any] = {}
        for k, v in ev.items():
            if k == "properties":
                if v is None:
                    continue
                if not isinstance(v, Mapping):
                    errors.append(FieldError(i, "properties", "must be a JSON object"))
                    continue
                for pk, pv in v.items():
                    if pk in _KNOWN or pk == "properties":
                        errors.append(
                            FieldError(i, f"properties.{pk}", "clashes with a top-level event field")
                        )
                    else:
                        flat[str(pk)] = pv
            elif k in ("available_at", "ingested_at", "source"):
                errors.append(FieldError(i, k, "is set by the platform for live events; leave it out"))
            else:
                flat[str(k)] = v
        for k, v in flat.items():
            if not _FIELD_NAME.match(k):
                errors.append(FieldError(i, repr(k)[1:-1] or "(empty)", "field names must be 1–128 printable "
                                         "characters"))  # fmt: skip
                continue
            col = columns.get(k)
            if col is None:
                col = columns[k] = [None] * n
            col[i] = _cell(i, k, v, errors)
    if not columns:
        columns["customer_id"] = [None] * n
    return pa.table({k: pa.array(v, pa.string()) for k, v in columns.items()}), errors


_PLATFORM = frozenset(("available_at", "ingested_at", "source", "properties"))


def _text(v: Any) -> str | None:
    t = type(v)
    if t is str or v is None:
        return v
    if t is bool:
        return "true" if v else "false"
    if t is int or t is float:
        return repr(v)
    raise TypeError


def _flat_columns(events: Sequence[Any]) -> pa.Table | None:
    """The common case fast: flat JSON objects with scalar values and plain keys, a column at a time (the
    general loop below handles everything else, and says what is wrong)."""
    if not events or not all(type(e) is dict for e in events):
        return None
    keys = dict.fromkeys(k for e in events for k in e)  # first appearance: the order `properties` keeps
    if not keys:  # empty objects: the general loop (a customer_id column of nulls, each row refused for it)
        return None
    if not _PLATFORM.isdisjoint(keys) or not all(type(k) is str and _FIELD_NAME.match(k) for k in keys):
        return None
    columns = {}
    try:
        for k in keys:
            values = [e.get(k) for e in events]
            if not all(type(v) is str or v is None for v in values):
                values = [_text(v) for v in values]
            columns[k] = pa.array(values, pa.string())
    except TypeError:
        return None
    return pa.table(columns)


def events_table(events: Sequence[Any]) -> pa.Table:
    """:func:`event_columns`, raising :class:`RejectedBatch` on any JSON-level error."""
    table, errors = event_columns(events)
    if errors:
        raise RejectedBatch(errors)
    return table


class EventIdIndex:
    """The 64-bit hashes (DuckDB's ``hash(event_id)``) of every event id in the log and of every id accepted
    since: a sorted array plus a set of the newer ones, merged in now and then. Thread-safe.

    Two distinct ids share a hash with probability about n / 2^64 (5e-12 per new event with 100M in the log);
    such an event is still written to the log (which compares ids exactly) but not applied online."""

    def __init__(self) -> None:
        self._base = np.empty(0, np.uint64)
        self._recent: set[int] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._base) + len(self._recent)

    def load(self, con: duckdb.DuckDBPyConnection) -> int:
        """Take every event id of the log (a connection to the workspace database); returns how many."""
        hashes = con.execute("SELECT hash(event_id) AS h FROM events").fetchnumpy()["h"]
        self.add_sorted(np.asarray(hashes, dtype=np.uint64))
        return len(hashes)

    def add_sorted(self, hashes: np.ndarray, *, unique: bool = False) -> None:
        """Merge many hashes in at once (a load, a snapshot, a replay); ``unique``: already sorted and unique."""
        hashes = np.asarray(hashes, np.uint64)
        merged = hashes if unique and not len(self._base) else np.unique(np.concatenate([self._base, hashes]))
        with self._lock:
            self._base = merged

    def add(self, hashes: np.ndarray) -> None:
        """Note a few hashes (a sync's worth); merged into the sorted array when many have gathered."""
        with self._lock:
            self._recent.update(np.asarray(hashes, np.uint64).tolist())
        if len(self._recent) > 2_000_000:
            self._compact()

    @property
    def sorted_hashes(self) -> np.ndarray:
        self._compact(force=True)
        return self._base

    def claim(self, hashes: np.ndarray) -> np.ndarray:
        """Mark ``hashes`` as seen; returns, for each, whether it was new (first occurrence in this call too)."""
        base = self._base
        with self._lock:
            if len(base):
                pos = np.searchsorted(base, hashes)
                pos[pos == len(base)] = 0
                in_base = base[pos] == hashes
            else:
                in_base = np.zeros(len(hashes), bool)
            fresh = np.zeros(len(hashes), bool)
            recent = self._recent
            for i, h in enumerate(hashes.tolist()):
                if not in_base[i] and h not in recent:
                    recent.add(h)
                    fresh[i] = True
        if len(self._recent) > 2_000_000:
            self._compact()
        return fresh

    def release(self, hashes: np.ndarray) -> None:
        """Forget hashes claimed for a batch that then failed to become durable (so a retry is not a duplicate)."""
        with self._lock:
            self._recent.difference_update(hashes.tolist())

    def _compact(self, force: bool = False) -> None:
        with self._lock:
            if not self._recent or (not force and len(self._recent) < 2_000_000):
                return
            recent = np.fromiter(self._recent, np.uint64, len(self._recent))
            self._base = np.unique(np.concatenate([self._base, recent]))
            self._recent = set()


@dataclass(frozen=True)
class Origin:
    """Where a stream record came from, for the quarantine: ``source_file`` (``kafka://topic/partition``,
    ``redis://stream``), ``row_number`` (the offset, when the transport has integer offsets) and ``where`` (a
    readable position, put at the front of the detail)."""

    source_file: str
    row_number: int | None
    where: str


@dataclass
class LiveResult:
    """What one accepted batch did. ``events`` holds the new events (to apply online)."""

    received: int
    accepted: int
    duplicates: int
    quarantined: int
    events: pa.Table
    seconds: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)
    hashes: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))  # id hashes of ``events``


class LiveIngest:
    """Validate, deduplicate and durably spool live batches; thread-safe (one in-memory DuckDB cursor per
    thread). ``owner`` names this process's spool segments (``api``, ``kafka-web``, ...)."""

    def __init__(
        self,
        rules: EventRules,
        spool: SpoolWriter,
        *,
        index: EventIdIndex | None = None,
    ) -> None:
        self.rules = rules
        self.spool = spool
        self.index = index if index is not None else EventIdIndex()
        self._root = duckdb.connect()
        self._root.execute("SET TimeZone = 'UTC'").fetchall()
        self._local = threading.local()
        self._sql: dict[tuple[object, ...], str] = {}
        self._group_cond = threading.Condition()
        self._groups: dict[tuple[object, ...], list[list[Any]]] = {}
        self._validating: set[tuple[object, ...]] = set()

    def _con(self) -> duckdb.DuckDBPyConnection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = self._local.con = self._root.cursor()
            con.execute("SET TimeZone = 'UTC'").fetchall()
            define_macros(con)
            self._local.prepared = {}
        return con

    def _validate(self, table: pa.Table, source: EventSource) -> pa.Table:
        """:meth:`_validate_now`, shared: batches of one shape that arrive while another thread validates are
        validated together in one query (planning the validation SQL costs as much as running it on a
        thousand rows), each caller getting its own rows back."""
        key = (source.name, id(source), tuple(table.schema.names))
        with self._group_cond:
            group = self._groups.setdefault(key, [])
            slot: list[Any] = [table, None, None]
            group.append(slot)
            while slot[1] is None and slot[2] is None:
                if key in self._validating:
                    self._group_cond.wait()
                    continue
                self._validating.add(key)
                batch = list(group)
                group.clear()
                self._group_cond.release()
                try:
                    try:
                        tables = [s[0] for s in batch]
                        staged = self._validate_now(pa.concat_tables(tables) if len(tables) > 1 else tables[0],
                                                    source)  # fmt: skip
                        start = 0
                        for s_ in batch:
                            n = s_[0].num_rows
                            part = staged.slice(start, n)
                            if start:
                                rows = pc.subtract(part.column("row_number"), pa.scalar(start, pa.int64()))
                                part = part.set_column(0, "row_number", rows)
                            s_[1] = part
                            start += n
                    except BaseException as exc:
                        for s_ in batch:
                            s_[2] = exc
                finally:
                    self._group_cond.acquire()
                    self._validating.discard(key)
                    self._group_cond.notify_all()
        if slot[2] is not None:
            raise slot[2]
        return slot[1]

    def _validate_now(self, table: pa.Table, source: EventSource) -> pa.Table:
        """Rows of ``table`` (text columns) judged by the staging SQL: row_number, the canonical fields, reason,
        detail, id_hash.

        The SQL of each batch shape is prepared once per thread's connection (``PREPARE``) and executed per batch:
        parsing, binding and planning it cost more than running it on a thousand rows."""
        table = table.append_column(ROW, pa.array(range(1, table.num_rows + 1), pa.int64()))
        key = (source.name, id(source), tuple((f.name, str(f.type)) for f in table.schema))
        con = self._con()
        prepared: dict[tuple[object, ...], str] = self._local.prepared
        con.register("chunk", table)
        try:
            name = prepared.get(key)
            if name is None:
                sql = self._sql.get(key)
                if sql is None:
                    inner = staging_sql("chunk", table.schema, source, self.rules, now_sql="ingest_now()",
                                        live=True)  # fmt: skip
                    sql = self._sql[key] = (
                        f"SELECT row_number, {_EVENT_COLUMNS}, CAST(properties AS VARCHAR) AS properties, reason, "
                        f"detail, hash(event_id) AS id_hash FROM ({inner}) ORDER BY row_number"
                    )
                name = f"validate_{len(prepared)}"
                con.execute(f"PREPARE {name} AS {sql}").fetchall()
                prepared[key] = name
            return con.sql(f"EXECUTE {name}").to_arrow_table()
        finally:
            con.unregister("chunk")

    def accept(self, events: Sequence[Any], source: EventSource = LIVE_SOURCE, *, max_batch: int = MAX_BATCH
               ) -> LiveResult:  # fmt: skip
        """An HTTP batch: all valid → durable and accepted; any invalid → :class:`RejectedBatch`, nothing kept."""
        started = time.perf_counter()
        if not events:
            raise RejectedBatch([FieldError(0, "events", "the batch is empty")])
        if len(events) > max_batch:
            raise RejectedBatch(
                [FieldError(max_batch, "events", f"a batch holds at most {max_batch} events")]
            )
        staged = self._validate(events_table(events), source)
        bad = staged.filter(pc.is_valid(staged.column("reason")))
        if bad.num_rows:
            rows = bad.slice(0, 100).select(["row_number", "reason", "detail"]).to_pylist()
            raise RejectedBatch(
                [
                    FieldError(int(r["row_number"]) - 1, str(r["reason"]).split(":")[0], str(r["detail"]))
                    for r in rows
                ]
            )
        result = self._commit(staged, source, None)
        result.seconds = time.perf_counter() - started
        return result

    def accept_records(
        self, records: Sequence[bytes | str], origins: Sequence[Origin], source: EventSource
    ) -> LiveResult:
        """Stream records (JSON objects as text): the valid ones durable and accepted, the others durable in
        the quarantine with their origin. Returns once all of it is durable."""
        started = time.perf_counter()
        quarantine: list[dict[str, Any]] = []
        parsed: list[Any] = []
        keep: list[int] = []
        for i, raw in enumerate(records):
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                quarantine.append(_q(origins[i], raw, "record: not JSON", f"not valid JSON: {exc}"))
                continue
            if not isinstance(value, dict):
                quarantine.append(_q(origins[i], raw, "record: not a JSON object",
                                     f"a {type(value).__name__}, not a JSON object"))  # fmt: skip
                continue
            parsed.append(value)
            keep.append(i)
        staged = None
        if parsed:
            table, errors = event_columns(parsed)
            if errors:
                wrong = {e.index for e in errors}
                for e in errors:
                    i = keep[e.index]
                    quarantine.append(
                        _q(origins[i], records[i], f"{e.field}: invalid", f"{e.field}: {e.message}")
                    )
                mask = pa.array([j not in wrong for j in range(len(parsed))])
                table = table.filter(mask)
                keep = [k for j, k in enumerate(keep) if j not in wrong]
            if table.num_rows:
                staged = self._validate(table, source)
                bad = staged.filter(pc.is_valid(staged.column("reason")))
                for r in bad.select(["row_number", "reason", "detail"]).to_pylist():
                    i = keep[int(r["row_number"]) - 1]
                    quarantine.append(_q(origins[i], records[i], str(r["reason"]), str(r["detail"])))
        return self._finish_records(staged, quarantine, records, source, started)

    def _finish_records(
        self,
        staged: pa.Table | None,
        quarantine: list[dict[str, Any]],
        records: Sequence[bytes | str],
        source: EventSource,
        started: float,
    ) -> LiveResult:
        q_table = None
        if quarantine:
            ingest_id = uuid.uuid4().hex
            for row in quarantine:
                row["ingest_id"] = ingest_id
                row["source"] = source.name
            q_table = pa.Table.from_pylist(quarantine, schema=QUARANTINE_SCHEMA)
        result = self._commit(staged, source, q_table)
        result.received = len(records)
        result.quarantined = len(quarantine)
        for row in quarantine:
            reason = str(row["reason"]).split(":")[0]
            result.reasons[reason] = result.reasons.get(reason, 0) + 1
        result.seconds = time.perf_counter() - started
        return result

    def _commit(
        self, staged: pa.Table | None, source: EventSource, quarantine: pa.Table | None
    ) -> LiveResult:
        if staged is not None:
            staged = staged.filter(pc.is_null(staged.column("reason")))
        if staged is None or staged.num_rows == 0:
            if quarantine is not None:
                self.spool.append(KIND_QUARANTINE, quarantine)
            return LiveResult(0, 0, 0, 0, SPOOL_EVENT_SCHEMA.empty_table())
        hashes = staged.column("id_hash").to_numpy().astype(np.uint64, copy=False)
        n = staged.num_rows
        events = pa.table(
            [staged.column(name) if name != "source" else pa.array([source.name] * n, pa.string())
             for name in SPOOL_EVENT_SCHEMA.names],
            schema=SPOOL_EVENT_SCHEMA,
        )  # fmt: skip
        fresh = self.index.claim(hashes)
        try:
            # Every valid event goes to the spool, duplicates too: the log compares ids exactly when it is moved.
            self.spool.append(KIND_EVENTS, events)
            if quarantine is not None:
                self.spool.append(KIND_QUARANTINE, quarantine)
        except BaseException:
            self.index.release(hashes[fresh])
            raise
        new = events.filter(pa.array(fresh)) if not fresh.all() else events
        return LiveResult(n, new.num_rows, n - new.num_rows, 0, new, hashes=hashes[fresh])

    def close(self) -> None:
        self.spool.close()


def _q(origin: Origin, raw: bytes | str, reason: str, detail: str) -> dict[str, Any]:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return {
        "source_file": origin.source_file,
        "row_number": origin.row_number,
        "reason": reason,
        "detail": f"{origin.where}: {detail}",
        "raw": text[:65536],
    }


def now_us() -> int:
    return int(datetime.now(UTC).timestamp() * 1_000_000)
