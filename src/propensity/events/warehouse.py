"""Warehouse sources: rows read from PostgreSQL by a declared query, incrementally by a watermark column.

The connection URL comes only from the environment variable the spec names (``url_env``); it is never written
to the spec, the state files or a message (an error quotes the server's words with the URL's password
removed). The declared query is wrapped as a subquery: with a ``watermark`` column, a load reads the rows whose
watermark is at or after the largest one of the previous load (kept in ``.propensity/sources/<name>.watermark
.json``), so a row committed later with the boundary value is not missed; the boundary rows read again are
dropped by the event log's dedupe like any re-read row.
"""

from __future__ import annotations

import contextlib
import json
import os
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa

from propensity.config.warehouse import SqlQuery
from propensity.core.errors import PropensityError
from propensity.workspace import Workspace


class WarehouseError(PropensityError):
    """A warehouse source cannot be read: no URL in the environment, a refused connection, a bad query."""


def _url(sql: SqlQuery, what: str) -> str:
    url = os.environ.get(sql.url_env, "").strip()
    if not url:
        raise WarehouseError(
            f"{what}: the environment variable {sql.url_env} is not set; put the postgresql:// URL there (it is "
            "read only from the environment, never from propensity.yaml)"
        )
    return url


def _scrub(text: str, url: str) -> str:
    secret = urlsplit(url).password
    out = text.replace(url, "<url>")
    return out.replace(secret, "***") if secret else out


def _watermark_file(workspace: Workspace, name: str) -> Path:
    return workspace.state_dir / "sources" / f"{name}.watermark.json"


def last_watermark(workspace: Workspace, name: str) -> Any:
    """The largest watermark of the source's last load (as JSON wrote it), or None before the first."""
    path = _watermark_file(workspace, name)
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("value")


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, Decimal):
        return str(v)
    return v


def _arrow_column(values: list[Any]) -> pa.Array:
    if any(isinstance(v, Decimal) for v in values):
        return pa.array([None if v is None else float(v) for v in values], pa.float64())
    try:
        arr = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())
    if pa.types.is_null(arr.type):
        return pa.array(values, pa.string())
    return arr


def read_query(sql: SqlQuery, *, what: str, since: Any = None) -> pa.Table:
    """The query's rows as Arrow (numerics as float64, times as timestamps), those at or after ``since`` on
    the watermark column when both are given."""
    import psycopg
    from psycopg import sql as q

    url = _url(sql, what)
    text = q.SQL("SELECT * FROM ({}) AS propensity_source").format(q.SQL(sql.query))
    params: list[Any] = []
    if sql.watermark is not None:
        if since is not None:
            text = q.SQL("{} WHERE {} >= %s").format(text, q.Identifier(sql.watermark))
            params.append(since)
        text = q.SQL("{} ORDER BY {}").format(text, q.Identifier(sql.watermark))
    try:
        with psycopg.connect(url, connect_timeout=10) as con, con.cursor() as cur:
            cur.execute(text, params)
            names = [d.name for d in cur.description or []]
            rows = cur.fetchall()
    except psycopg.Error as exc:
        raise WarehouseError(f"{what}: {_scrub(str(exc).strip(), url)}") from None
    if sql.watermark is not None and sql.watermark not in names:
        raise WarehouseError(f"{what}: the query has no column {sql.watermark!r} (its watermark)")
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    return pa.table({n: _arrow_column(list(c)) for n, c in zip(names, columns, strict=True)})


def load_incremental(workspace: Workspace, name: str, sql: SqlQuery, *, what: str) -> tuple[pa.Table, Any]:
    """The rows new since the last load, and the watermark to record once they are safely ingested."""
    since = last_watermark(workspace, name) if sql.watermark else None
    if since is not None and isinstance(since, str):
        with contextlib.suppress(ValueError):  # a number or text watermark stays as it is
            since = datetime.fromisoformat(since)
    table = read_query(sql, what=what, since=since)
    new_mark = None
    if sql.watermark is not None and table.num_rows:
        import pyarrow.compute as pc

        new_mark = pc.max(table.column(sql.watermark)).as_py()
    return table, new_mark


def save_watermark(workspace: Workspace, name: str, value: Any) -> None:
    if value is None:
        return
    path = _watermark_file(workspace, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"value": _jsonable(value)}) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def ingest_sql_source(workspace: Workspace, source_name: str) -> Any:
    """Ingest a declared ``sql:`` event source (new rows since its watermark); returns the IngestReport."""
    from propensity.events.ingest import ingest_table

    source = workspace.spec.source(source_name)
    assert source.sql is not None
    table, mark = load_incremental(workspace, source.name, source.sql, what=f"source {source.name}")
    report = ingest_table(workspace, table, source=source.name)
    for f in report.files:
        f.path = f"sql:{source.name}"
    save_watermark(workspace, source.name, mark)
    return report
