"""Map a source's columns onto the canonical event and decide, row by row, whether it is valid.

All of it is one generated SQL ``SELECT`` over a batch of the source (set-based, so a file of ten million rows
validates at DuckDB speed). Each output row carries either the canonical event or a ``reason`` (a short category
used in summaries) and a ``detail`` (the exact value and what is allowed), never both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import duckdb
import pyarrow as pa

from propensity.config.spec import EventRules, EventSource
from propensity.core.event import NUMERIC_PROPERTIES, TEXT_PROPERTIES
from propensity.events.readers import ROW

# Fields that feed the content-derived event id when a source has none: everything that makes an event itself.
_ID_FIELDS = (
    "customer_id",
    "event_type",
    "event_time_us",
    *NUMERIC_PROPERTIES,
    *TEXT_PROPERTIES,
    "properties",
)


def define_macros(con: duckdb.DuckDBPyConnection) -> None:
    """Define the macros :func:`staging_sql` relies on, on this connection.

    ``ingest_now()`` is the transaction's timestamp (every row of one file or batch shares its ``ingested_at``);
    ``pq_quote(x)`` wraps a value in single quotes for error details.
    """
    con.execute("CREATE OR REPLACE TEMP MACRO ingest_now() AS get_current_timestamp()").fetchall()
    con.execute("CREATE OR REPLACE TEMP MACRO pq_quote(x) AS chr(39) || x || chr(39)").fetchall()


def q(name: str) -> str:
    """Quote an identifier for DuckDB."""
    return '"' + name.replace('"', '""') + '"'


def lit(value: str) -> str:
    """Quote a string literal for DuckDB."""
    return "'" + value.replace("'", "''") + "'"


def timestamp_expr(column: str, dtype: pa.DataType, *, zone: str, fmt: str | None) -> str:
    """SQL turning a source column of any supported type into TIMESTAMPTZ (NULL when it cannot be parsed).

    Naive values are wall-clock times in ``zone``; integers are epoch seconds (or milliseconds from 1e11 up).
    """
    c = q(column)
    if pa.types.is_timestamp(dtype):
        if dtype.tz is not None:
            return f"CAST({c} AS TIMESTAMPTZ)"
        return f"timezone({lit(zone)}, CAST({c} AS TIMESTAMP))"
    if pa.types.is_date(dtype):
        return f"timezone({lit(zone)}, CAST({c} AS TIMESTAMP))"
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype):
        return (
            f"CASE WHEN isfinite(CAST({c} AS DOUBLE)) THEN "
            f"to_timestamp(CASE WHEN abs({c}) >= 1e11 THEN {c} / 1000.0 ELSE CAST({c} AS DOUBLE) END) END"
        )
    text = f"trim(CAST({c} AS VARCHAR))"
    if fmt:
        parsed = f"try_strptime({text}, {lit(fmt)})"
        if "%z" in fmt or "%Z" in fmt:
            return f"CAST({parsed} AS TIMESTAMPTZ)"
        return f"timezone({lit(zone)}, {parsed})"
    return (
        f"CASE WHEN regexp_matches({text}, '(Z|z|UTC|GMT|[+-]\\d\\d(:?\\d\\d)?)$') "
        f"THEN TRY_CAST({text} AS TIMESTAMPTZ) "
        f"WHEN regexp_matches({text}, '^\\d{{9,10}}(\\.\\d+)?$') THEN to_timestamp(TRY_CAST({text} AS DOUBLE)) "
        f"WHEN regexp_matches({text}, '^\\d{{12,13}}$') THEN to_timestamp(TRY_CAST({text} AS DOUBLE) / 1000.0) "
        # DuckDB reads a trailing "BC" on a naive time as nothing at all (AD): refuse it rather than move the year.
        f"WHEN lower(right({text}, 2)) = 'bc' THEN NULL "
        f"ELSE timezone({lit(zone)}, TRY_CAST({text} AS TIMESTAMP)) END"
    )


def _number_expr(column: str, dtype: pa.DataType) -> str:
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return f"CAST({q(column)} AS DOUBLE)"
    return f"TRY_CAST(trim(CAST({q(column)} AS VARCHAR)) AS DOUBLE)"


def dedupe_mode(source: EventSource, schema: pa.Schema) -> str:
    """The source's dedupe rule for a file with ``schema``: ``event_id``, ``content`` or ``none``."""
    id_col = source.columns.get("event_id", "event_id")
    has_id = id_col in schema.names
    mode = source.dedupe or ("event_id" if has_id else "content")
    if mode == "event_id" and not has_id:
        raise ValueError(
            f"source {source.name!r} has dedupe: event_id but the file has no {id_col!r} column; map the id "
            "column under columns: {event_id: <name>}, or use dedupe: content (or none)"
        )
    return mode


def staging_sql(
    relation: str,
    schema: pa.Schema,
    source: EventSource,
    rules: EventRules,
    *,
    now_sql: str,
    live: bool = False,
) -> str:
    """The validating SELECT over ``relation`` (a batch with the source's columns plus ``__row``).

    Output columns: ``row_number``, the canonical event fields, ``reason`` and ``detail`` (NULL when valid) and
    ``raw`` (NULL here; :func:`raw_rows_sql` fills it for the invalid rows only, which keeps valid rows cheap). With ``live`` the availability is the ingest time.
    The connection must define the macros ``ingest_now()`` and ``pq_quote(x)`` (see :func:`define_macros`).
    """
    present = {f.name: f.type for f in schema if f.name != ROW}

    def column_for(field: str) -> str | None:
        name = source.columns.get(field, field)
        return name if name in present else None

    used = {c for f in ("event_id", "customer_id", "event_type", "event_time", "available_at",
                        *NUMERIC_PROPERTIES, *TEXT_PROPERTIES) if (c := column_for(f)) is not None}  # fmt: skip
    extras = [n for n in present if n not in used]
    raw_text = {n: f"CAST({q(n)} AS VARCHAR)" for n in present}

    def text_or_null(field: str) -> str:
        # Identity fields are trimmed (" c42 " is c42; "   " is missing); properties keep their text as sent,
        # empty meaning missing. Trimming every text column cost ~40% of validation time.
        col = column_for(field)
        if col is None:
            return "CAST(NULL AS VARCHAR)"
        text = f"trim({raw_text[col]})" if field in ("customer_id", "event_type") else raw_text[col]
        return f"NULLIF({text}, '')"

    # event type: a constant, or the source's value mapped through event_type_values.
    if source.event_type is not None:
        event_type = lit(source.event_type)
    else:
        raw_type = text_or_null("event_type")
        if source.event_type_values:
            pairs = " ".join(f"WHEN {lit(k)} THEN {lit(v)}" for k, v in source.event_type_values.items())
            event_type = f"CASE {raw_type} {pairs} ELSE {raw_type} END"
        else:
            event_type = raw_type

    def raw_of(col: str) -> str:
        # The value as the source wrote it, for "not a number/timestamp" checks and messages. A typed column
        # (Parquet timestamps, doubles) cannot hold unparseable text, so it needs none: formatting every typed
        # value as text just in case cost more than the rest of validation.
        if pa.types.is_string(present[col]) or pa.types.is_large_string(present[col]):
            return f"NULLIF(trim({q(col)}), '')"
        return "CAST(NULL AS VARCHAR)"

    def ts(field: str) -> tuple[str, str]:
        col = column_for(field)
        if col is None:
            return "CAST(NULL AS TIMESTAMPTZ)", "CAST(NULL AS VARCHAR)"
        return timestamp_expr(col, present[col], zone=source.timezone, fmt=source.timestamp_format), raw_of(
            col
        )

    event_time, event_time_raw = ts("event_time")
    available_raw_ts, available_raw = ts("available_at")
    numbers = {}
    for field in NUMERIC_PROPERTIES:
        col = column_for(field)
        numbers[field] = (
            (_number_expr(col, present[col]), raw_of(col))
            if col
            else ("CAST(NULL AS DOUBLE)", "CAST(NULL AS VARCHAR)")
        )
    properties = (
        "json_object(" + ", ".join(f"{lit(n)}, {raw_text[n]}" for n in extras) + ")"
        if extras
        else "CAST(NULL AS JSON)"
    )
    allowed = sorted(rules.allowed_types)
    allowed_list = "(" + ", ".join(lit(t) for t in allowed) + ")"
    negative_ok = "(" + ", ".join(lit(t) for t in rules.negative_amount_types or ["-"]) + ")"
    allowed_text = ", ".join(allowed) if len(allowed) <= 12 else ", ".join(allowed[:12]) + ", ..."
    delay_us = source.delay.seconds * 1_000_000
    max_future_us = rules.max_future.seconds * 1_000_000
    mode = dedupe_mode(source, schema)
    id_col = column_for("event_id") if mode != "content" else None
    source_id = f"NULLIF(trim({raw_text[id_col]}), '')" if id_col else "CAST(NULL AS VARCHAR)"
    amount_text = "coalesce(amount_raw, CAST(amount AS VARCHAR))"
    quantity_text = "coalesce(quantity_raw, CAST(quantity AS VARCHAR))"

    checks: Sequence[tuple[str, str, str]] = [
        *(
            [
                (
                    "source_event_id IS NULL",
                    "event_id: missing",
                    "'event_id is missing or empty (dedupe: event_id)'",
                )
            ]
            if mode == "event_id" and source.dedupe == "event_id"
            else []
        ),
        ("customer_id IS NULL", "customer_id: missing or empty", "'customer_id is missing or empty'"),
        ("event_type IS NULL", "event_type: missing", "'event_type is missing'"),
        (
            f"event_type NOT IN {allowed_list}",
            "event_type: not a declared event type",
            f"'event_type ' || pq_quote(event_type) || ' is not declared; allowed: {allowed_text} "
            "(declare more in events.extra_types)'",
        ),
        ("event_time_raw IS NULL AND event_time IS NULL", "event_time: missing", "'event_time is missing'"),
        (
            "event_time IS NULL",
            "event_time: not a timestamp",
            "'event_time ' || pq_quote(event_time_raw) || ' is not a timestamp; use ISO 8601 (2024-05-01T12:30:00Z), "
            "epoch seconds, or set timestamp_format on the source'",
        ),
        (
            # "-infinity", year 0 and BC dates parse as timestamps; the log and every reader need years 1-9999.
            "NOT isfinite(event_time) OR event_time < TIMESTAMPTZ '0001-01-01 00:00:00+00' "
            "OR event_time >= TIMESTAMPTZ '9999-12-31 00:00:00+00'",
            "event_time: out of range",
            "'event_time ' || pq_quote(coalesce(event_time_raw, CAST(event_time AS VARCHAR))) || "
            "' is outside the years 1 to 9999'",
        ),
        (
            f"event_time > {now_sql} + to_microseconds({max_future_us})",
            "event_time: in the future",
            f"'event_time ' || CAST(event_time AS VARCHAR) || ' is more than {rules.max_future} after ingestion "
            "(events.max_future)'",
        ),
        (
            "available_raw IS NOT NULL AND available_parsed IS NULL",
            "available_at: not a timestamp",
            "'available_at ' || pq_quote(available_raw) || ' is not a timestamp'",
        ),
        (
            "NOT isfinite(available_parsed) OR available_parsed < TIMESTAMPTZ '0001-01-01 00:00:00+00' "
            "OR available_parsed >= TIMESTAMPTZ '9999-12-31 00:00:00+00'",
            "available_at: out of range",
            "'available_at ' || pq_quote(coalesce(available_raw, CAST(available_parsed AS VARCHAR))) || "
            "' is outside the years 1 to 9999'",
        ),
        (
            "amount_raw IS NOT NULL AND amount IS NULL",
            "amount: not a number",
            "'amount ' || pq_quote(amount_raw) || ' is not a number'",
        ),
        (
            "NOT isfinite(amount)",
            "amount: not finite",
            f"'amount ' || {amount_text} || ' is not a finite number'",
        ),
        (
            f"amount < 0 AND event_type NOT IN {negative_ok}",
            "amount: negative",
            f"'amount ' || {amount_text} || ' is negative, which only event types in events.negative_amount_types "
            f"({', '.join(rules.negative_amount_types) or 'none'}) allow'",
        ),
        (
            "quantity_raw IS NOT NULL AND quantity IS NULL",
            "quantity: not a number",
            "'quantity ' || pq_quote(quantity_raw) || ' is not a number'",
        ),
        (
            "NOT isfinite(quantity)",
            "quantity: not finite",
            f"'quantity ' || {quantity_text} || ' is not finite'",
        ),
    ]
    clashes = case_clashes(present)
    if clashes:  # DuckDB's names are case-insensitive: one column would silently stand for both
        a, b = clashes[0]
        message = f"columns {a!r} and {b!r} differ only in case; rename or drop one"
        checks = [("TRUE", "columns: names differ only in case", lit(message)), *checks]
    reason = "CASE " + " ".join(f"WHEN {cond} THEN {lit(r)}" for cond, r, _ in checks) + " END"
    # The detail is keyed on the reason, so the row checks run once per row, not twice.
    detail = "CASE reason " + " ".join(f"WHEN {lit(r)} THEN {d}" for _, r, d in checks) + " END"
    available = (
        now_sql
        if live
        else f"greatest(coalesce(available_parsed, event_time + to_microseconds({delay_us})), event_time)"
    )
    id_parts = ", ".join(f"coalesce(CAST({f} AS VARCHAR), '')" for f in _ID_FIELDS)
    text_cols = ",\n        ".join(f"{text_or_null(f)} AS {f}" for f in TEXT_PROPERTIES)
    return f"""
WITH mapped AS (
    SELECT
        {ROW} AS row_number,
        {source_id} AS source_event_id,
        {text_or_null("customer_id")} AS customer_id,
        {event_type} AS event_type,
        {event_time} AS event_time,
        {event_time_raw} AS event_time_raw,
        {available_raw_ts} AS available_parsed,
        {available_raw} AS available_raw,
        {numbers["amount"][0]} AS amount,
        {numbers["amount"][1]} AS amount_raw,
        {numbers["quantity"][0]} AS quantity,
        {numbers["quantity"][1]} AS quantity_raw,
        {text_cols},
        {properties} AS properties
    FROM {relation}
), checked AS (
    SELECT *, {reason} AS reason, epoch_us(event_time) AS event_time_us FROM mapped
), judged AS (
    SELECT *, {detail} AS detail FROM checked
)
SELECT
    row_number,
    coalesce(source_event_id, 'h' || md5(concat_ws(chr(31), {id_parts}))) AS event_id,
    customer_id, event_type, event_time,
    {available} AS available_at,
    amount, quantity, {", ".join(TEXT_PROPERTIES)}, properties,
    reason, detail,
    CAST(NULL AS VARCHAR) AS raw
FROM judged
"""


def case_clashes(names: Sequence[str] | Mapping[str, object]) -> list[tuple[str, str]]:
    """Pairs of names that differ only in case (``("CUSTOMER_ID", "customer_id")``), first seen first."""
    seen: dict[str, str] = {}
    out = []
    for name in names:
        other = seen.setdefault(name.casefold(), name)
        if other != name:
            out.append((other, name))
    return out


def raw_rows_sql(relation: str, schema: pa.Schema, rows_relation: str) -> str:
    """SQL giving ``(row_number, raw)``: the source row as a JSON object, for the rows in ``rows_relation``."""
    names = [f.name for f in schema if f.name != ROW]
    if case_clashes(names):
        # Names differing only in case cannot be told apart by name in SQL: refer to the columns by position.
        pos = {f.name: i + 1 for i, f in enumerate(schema)}
        raw = "json_object(" + ", ".join(f"{lit(n)}, CAST(#{pos[n]} AS VARCHAR)" for n in names) + ")"
    else:
        raw = "to_json(struct_pack(" + ", ".join(f"{q(n)} := CAST({q(n)} AS VARCHAR)" for n in names) + "))"
    return (
        f"SELECT {ROW} AS row_number, CAST({raw} AS VARCHAR) AS raw FROM {relation} "
        f"WHERE {ROW} IN (SELECT row_number FROM {rows_relation})"
    )
