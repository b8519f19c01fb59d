"""Live ingest: events sent to the API, validated by the bulk ingest's rules, appended durably, all or nothing.

The difference from bulk ingest (:func:`propensity.events.ingest.ingest_table`) is what happens to a bad row:
bulk ingest quarantines it and keeps the rest; a live batch with any invalid event is rejected whole (nothing is
written) and the caller learns which event and which field. The validation is the same SQL
(:func:`propensity.events.validate.staging_sql`, with ``live=True``: ``available_at`` is the ingest time), and
the append is one DuckDB transaction committed before this returns, so an acknowledged event survives a crash.
Duplicates (an ``event_id`` already in the log or repeated in the batch) are accepted and skipped.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from propensity.config.spec import EventSource
from propensity.core.errors import PropensityError
from propensity.core.event import CORE_FIELDS, PROPERTY_FIELDS
from propensity.events.ingest import INSERT_STAGED, insert_staged_sql
from propensity.events.log import open_event_log, transaction
from propensity.events.readers import ROW
from propensity.events.validate import define_macros, staging_sql
from propensity.workspace import Workspace

LIVE_SOURCE = EventSource(name="api", path="")
MAX_BATCH = 10_000
_KNOWN = frozenset((*CORE_FIELDS, *PROPERTY_FIELDS))
# Extra keys become columns of the staging SQL (then keys of `properties`): no empty or control-character names.
_FIELD_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")
_INSERT = (
    INSERT_STAGED
    + """RETURNING event_id, customer_id, event_type, event_time, available_at, amount, quantity, currency, sku,
          category, campaign_id, channel, plan, properties
"""
)


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


@dataclass
class LiveIngestResult:
    received: int
    accepted: int
    duplicates: int
    inserted: pa.Table  # the new events, in the log's columns (to apply to the online store)
    seconds: float = 0.0
    event_ids: list[str] = field(default_factory=list)


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


def events_table(events: Sequence[Any]) -> pa.Table:
    """JSON events → a table of text columns (the shape of a CSV), checking only the JSON-level shape.

    Typed fields are parsed by the shared validation SQL; keys of a ``properties`` object and unknown top-level
    keys become extra columns, which the log keeps in ``properties``.
    """
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
            columns.setdefault(k, [None] * n)[i] = _cell(i, k, v, errors)
    if errors:
        raise RejectedBatch(errors)
    if not columns:
        columns["customer_id"] = [None] * n
    return pa.table({k: pa.array(v, pa.string()) for k, v in columns.items()})


def append_live(
    workspace: Workspace, events: Sequence[Any], *, max_batch: int = MAX_BATCH
) -> LiveIngestResult:
    """Validate and durably append one batch; raises :class:`RejectedBatch` (nothing written) if any is bad."""
    started = time.perf_counter()
    if not events:
        raise RejectedBatch([FieldError(0, "events", "the batch is empty")])
    if len(events) > max_batch:
        raise RejectedBatch([FieldError(max_batch, "events", f"a batch holds at most {max_batch} events")])
    table = events_table(events)
    table = table.append_column(ROW, pa.array(range(1, table.num_rows + 1), pa.int64()))
    sql = staging_sql(
        "chunk", table.schema, LIVE_SOURCE, workspace.spec.events, now_sql="ingest_now()", live=True
    )
    log = open_event_log(workspace)
    insert = _INSERT.replace(INSERT_STAGED, insert_staged_sql(log), 1)
    with workspace.write_lock(), log.connection() as con, transaction(con):
        define_macros(con)
        con.register("chunk", table)
        con.execute(f"CREATE OR REPLACE TEMP TABLE staged AS {sql}").fetchall()
        bad = con.execute(
            "SELECT row_number, reason, detail FROM staged WHERE reason IS NOT NULL ORDER BY row_number LIMIT 100"
        ).fetchall()
        if bad:
            raise RejectedBatch(
                [FieldError(int(r) - 1, str(reason).split(":")[0], str(detail)) for r, reason, detail in bad]
            )
        # As Arrow: turning the returned timestamps into Python datetimes cost more than the insert.
        inserted = con.sql(insert, params=[LIVE_SOURCE.name]).to_arrow_table()
        log.commit(con)
        accepted = inserted.num_rows
        con.execute(
            "INSERT INTO ingests VALUES (?, 'events', ?, '<api>', NULL, ?, ?, ?, 0, ?, now())",
            [uuid.uuid4().hex, LIVE_SOURCE.name, table.num_rows, accepted, table.num_rows - accepted,
             datetime.now(UTC).isoformat()],
        ).fetchall()  # fmt: skip
        con.execute("DROP TABLE IF EXISTS staged").fetchall()
        con.unregister("chunk")
    return LiveIngestResult(
        received=table.num_rows,
        accepted=accepted,
        duplicates=table.num_rows - accepted,
        inserted=inserted,
        seconds=time.perf_counter() - started,
        event_ids=[str(x) for x in inserted.column("event_id").to_pylist()],
    )
