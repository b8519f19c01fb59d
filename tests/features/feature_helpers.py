"""Shared helpers for the feature engine tests: an in-memory event log and a spine builder."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa

from propensity.core.event import ATTRIBUTES_DDL, EVENT_SCHEMA, EVENTS_DDL, UTC_TS

T0 = datetime(2024, 1, 10, tzinfo=UTC)
T0_US = int(T0.timestamp()) * 1_000_000


def us(dt: datetime) -> int:
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def at(**delta: float) -> datetime:
    """T0 plus a delta, e.g. ``at(days=-1, hours=2)``."""
    return T0 + timedelta(**delta)


def new_log() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute(EVENTS_DDL)
    con.execute(ATTRIBUTES_DDL)
    return con


def _ts(value: Any) -> Any:
    return (
        datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value) if isinstance(value, int) else value
    )


def insert_events(con: duckdb.DuckDBPyConnection, events: Sequence[Mapping[str, Any]]) -> None:
    """Insert event mappings (timestamps as datetimes or epoch µs) into the ``events`` table."""
    if not events:
        return
    rows = {f.name: [] for f in EVENT_SCHEMA}  # type: ignore[var-annotated]
    for e in events:
        for f in EVENT_SCHEMA:
            value = e.get(f.name)
            if f.name in ("event_time", "available_at"):
                value = _ts(value)
            if f.name == "ingested_at":
                value = _ts(e.get("available_at"))
            rows[f.name].append(value)
    table = pa.table(rows, schema=EVENT_SCHEMA)
    con.register("_new_events", table)
    con.execute("INSERT INTO events SELECT * FROM _new_events")
    con.unregister("_new_events")


def insert_attributes(con: duckdb.DuckDBPyConnection, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        return
    table = pa.table(
        {
            "customer_id": [r["customer_id"] for r in rows],
            "attribute": [r["attribute"] for r in rows],
            "value": pa.array([r.get("value") for r in rows], pa.string()),
            "valid_from": pa.array([_ts(r["valid_from"]) for r in rows], UTC_TS),
            "available_at": pa.array([_ts(r["available_at"]) for r in rows], UTC_TS),
            "source": pa.array([r.get("source") for r in rows], pa.string()),
            "ingested_at": pa.array([_ts(r["available_at"]) for r in rows], UTC_TS),
        }
    )
    con.register("_new_attrs", table)
    con.execute("INSERT INTO attributes SELECT * FROM _new_attrs")
    con.unregister("_new_attrs")


def spine(rows: Iterable[tuple[str, Any]]) -> pa.Table:
    pairs = list(rows)
    return pa.table(
        {
            "customer_id": pa.array([c for c, _ in pairs], pa.string()),
            "as_of": pa.array([_ts(t) for _, t in pairs], UTC_TS),
        }
    )


def same(a: Any, b: Any) -> bool:
    """Integers, strings and nulls exactly; floats within 1e-9 (relative or absolute)."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b) and type(a) is type(b)
