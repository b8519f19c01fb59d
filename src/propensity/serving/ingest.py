"""Live ingest straight into the event log: one batch, validated by the bulk ingest's rules, appended in one
transaction of the workspace's DuckDB file, all or nothing.

The server no longer takes this path (it spools: :mod:`propensity.events.live`, :mod:`propensity.serving.live`);
it stays as the Python API's one-call append and as the benchmark's reference.

The difference from bulk ingest (:func:`propensity.events.ingest.ingest_table`) is what happens to a bad row:
bulk ingest quarantines it and keeps the rest; a live batch with any invalid event is rejected whole (nothing is
written) and the caller learns which event and which field. The validation is the same SQL
(:func:`propensity.events.validate.staging_sql`, with ``live=True``: ``available_at`` is the ingest time), and
the append is one DuckDB transaction committed before this returns, so an acknowledged event survives a crash.
Duplicates (an ``event_id`` already in the log or repeated in the batch) are accepted and skipped.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from propensity.events.ingest import INSERT_STAGED, insert_staged_sql
from propensity.events.live import (  # re-exported: they used to live here
    LIVE_SOURCE,
    MAX_BATCH,
    FieldError,
    RejectedBatch,
    events_table,
)
from propensity.events.log import open_event_log, transaction
from propensity.events.readers import ROW
from propensity.events.validate import define_macros, staging_sql
from propensity.workspace import Workspace

__all__ = [
    "LIVE_SOURCE",
    "MAX_BATCH",
    "FieldError",
    "LiveIngestResult",
    "RejectedBatch",
    "append_live",
    "events_table",
]

_INSERT = (
    INSERT_STAGED
    + """RETURNING event_id, customer_id, event_type, event_time, available_at, amount, quantity, currency, sku,
          category, campaign_id, channel, plan, properties
"""
)


@dataclass
class LiveIngestResult:
    received: int
    accepted: int
    duplicates: int
    inserted: pa.Table  # the new events, in the log's columns (to apply to the online store)
    seconds: float = 0.0
    event_ids: list[str] = field(default_factory=list)


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
