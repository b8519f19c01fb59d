"""Labels and eligibility: for an action, the eligible (customer, as_of) rows and their labels, in SQL.

The label of (c, t) is about events with ``event_time`` in ``(t + gap, t + gap + horizon]`` (DESIGN.md,
"Labels"); ``outcome: absent`` turns it into "no such event" (churn). Eligibility only ever looks at what was
visible at t (``available_at <= t``): activity in ``(t - active_within, t]``, the attribute as of t, the latest
billing event's due date. Cutoff actions take rows at a list of cutoffs (a grid, calendar months or explicit
dates): each event is range-joined to the few cutoffs it affects instead of joining every event with every
cutoff; trigger actions (respond) take one row per trigger event, as of the moment it was visible, and their
window may end at a time the trigger carries (``horizon: until properties.end_date``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from propensity.config.actions import Action, AttributeCondition, EventFilter
from propensity.config.predicates import DATE_PATTERN, DATE_TZ_PATTERN, PROPERTIES_PREFIX, sql_literal

LABEL_COLUMNS = ("customer_id", "as_of", "label", "label_end", "campaign_id", "trigger_id")
UTC_US = pa.timestamp("us", tz="UTC")
US = 1_000_000
_COUNTER = itertools.count()


def _column(field: str) -> str:
    if field.startswith(PROPERTIES_PREFIX):
        key = field[len(PROPERTIES_PREFIX) :]
        return f"json_extract_string(properties, '$.{key}')"
    return field


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(t: datetime) -> int:
    """Exact microseconds since the epoch (no float rounding)."""
    return (t - _EPOCH) // timedelta(microseconds=1)


def _types(types: Sequence[str]) -> str:
    return "(" + ", ".join(sql_literal(t) for t in sorted(set(types))) + ")"


def event_filter_sql(f: EventFilter, *, types: Sequence[str] | None = None) -> str:
    """A WHERE condition selecting the filter's events."""
    cond = f"event_type IN {_types(types or f.event_type)}"
    pred = f.predicate
    if pred is not None:
        cond += f" AND {pred.sql(_column)}"
    return cond


def attribute_condition_sql(cond: AttributeCondition, rows: str) -> str:
    """Rows of ``rows`` (customer_id, as_of) whose attribute as of as_of satisfies ``cond``."""
    values = cond.in_ if cond.in_ is not None else cond.not_in
    assert values is not None
    test = "IN" if cond.in_ is not None else "NOT IN"
    return f"""
        SELECT r.customer_id, r.as_of FROM {rows} r
        ASOF JOIN (
            SELECT customer_id, greatest(valid_from, available_at) AS known_from, value
            FROM attributes WHERE attribute = {sql_literal(cond.name)}
        ) a ON a.customer_id = r.customer_id AND a.known_from <= r.as_of
        WHERE a.value IS NOT NULL AND a.value {test} {_types(values)}
    """


def _cutoff_query(action: Action, cuts: str) -> str:
    """SQL for a cutoff action at the cutoffs of relation ``cuts`` (``k``: index, ``t``: epoch µs).

    Each event is joined to the few cutoffs it affects (a range join on the small cutoffs table), so any list of
    cutoffs works: a weekly grid, calendar months, or explicit dates. ``$tmin`` / ``$tmax``: first / last cutoff.
    """
    gap, h = action.gap.seconds * US, action.horizon.seconds * US
    ev_us = "epoch_us(event_time)"
    vis_us = "epoch_us(greatest(event_time, available_at))"
    parts = [
        f"""
        known AS (
            SELECT customer_id, min(first_us) AS first_us FROM (
                SELECT customer_id, min({vis_us}) AS first_us FROM events GROUP BY 1
                UNION ALL
                SELECT customer_id, min(epoch_us(greatest(valid_from, available_at))) FROM attributes GROUP BY 1
            ) GROUP BY 1
        ),
        base AS (SELECT kn.customer_id, c.k, c.t FROM known kn JOIN {cuts} c ON c.t >= kn.first_us),
        hits AS (
            SELECT DISTINCT e.customer_id, c.k FROM (
                SELECT customer_id, {ev_us} AS et FROM events
                WHERE {event_filter_sql(action.target)} AND {ev_us} > $tmin + {gap} AND {ev_us} <= $tmax + {gap + h}
            ) e JOIN {cuts} c ON c.t >= e.et - {gap + h} AND c.t < e.et - {gap}
        )"""
    ]
    filters = []
    elig = action.eligibility
    if elig.active_within is not None:
        types = _types(action.activity_types)
        if elig.active_within.is_lifetime:
            parts.append(
                f"""
        active AS (
            SELECT e.customer_id, c.k FROM (
                SELECT customer_id, min({vis_us}) AS vis FROM events WHERE event_type IN {types} GROUP BY 1
            ) e JOIN {cuts} c ON c.t >= e.vis
        )"""
            )
        else:
            d = elig.active_within.seconds * US
            parts.append(
                f"""
        active AS (
            SELECT DISTINCT e.customer_id, c.k FROM (
                SELECT customer_id, {ev_us} AS et, {vis_us} AS vis FROM events
                WHERE event_type IN {types} AND {vis_us} <= $tmax AND {ev_us} + {d} > $tmin
            ) e JOIN {cuts} c ON c.t >= e.vis AND c.t < e.et + {d}
        )"""
            )
        filters.append("(b.customer_id, b.k) IN (SELECT customer_id, k FROM active)")
    if elig.due is not None:
        cycle = elig.due.cycle.seconds * US
        parts.append(
            f"""
        due AS (
            SELECT DISTINCT e.customer_id, c.k FROM (
                SELECT customer_id, {ev_us} AS et, {vis_us} AS vis FROM events
                WHERE event_type IN {_types(elig.due.event_type)} AND {vis_us} <= $tmax
                  AND {ev_us} + {cycle - gap} > $tmin
            ) e JOIN {cuts} c ON c.t >= greatest(e.vis, e.et + {cycle - gap - h}) AND c.t < e.et + {cycle - gap}
        )"""
        )
        filters.append("(b.customer_id, b.k) IN (SELECT customer_id, k FROM due)")
    occurs = "h.k IS NOT NULL"
    label = occurs if action.outcome == "occurs" else f"NOT ({occurs})"
    where = " AND ".join(filters) or "TRUE"
    sql = f"""
        WITH {",".join(parts)},
        rows AS (
            SELECT b.customer_id, CAST(make_timestamp(b.t) AS TIMESTAMPTZ) AS as_of,
                   CAST({label} AS TINYINT) AS label
            FROM base b LEFT JOIN hits h ON h.customer_id = b.customer_id AND h.k = b.k
            WHERE {where}
        )
    """
    if elig.attribute is not None:
        sql += f", elig AS ({attribute_condition_sql(elig.attribute, 'rows')})"
        sql += """
        SELECT r.* FROM rows r SEMI JOIN elig e ON e.customer_id = r.customer_id AND e.as_of = r.as_of
        """
    else:
        sql += " SELECT * FROM rows"
    return sql


def until_sql(text: str, zone: str) -> str:
    """SQL: the end of a label window held as text (``horizon: until <field>``), as TIMESTAMPTZ, or NULL.

    A date alone (``2017-11-05``) is the end of that day in ``zone`` (its last microsecond); a time with
    an offset is that instant; a time without one is a wall-clock time in ``zone``."""
    z = sql_literal(zone)
    return f"""(CASE
        WHEN regexp_full_match({text}, '^\\d{{4}}-\\d{{2}}-\\d{{2}}$')
            THEN timezone({z}, CAST(TRY_CAST({text} AS DATE) + INTERVAL 1 DAY AS TIMESTAMP)) - INTERVAL 1 MICROSECOND
        WHEN regexp_full_match({text}, {sql_literal(DATE_TZ_PATTERN)})
            THEN TRY_CAST(replace({text}, 'Z', '+00:00') AS TIMESTAMPTZ)
        WHEN regexp_full_match({text}, {sql_literal(DATE_PATTERN)})
            THEN timezone({z}, TRY_CAST({text} AS TIMESTAMP))
    END)"""


def _trigger_query(action: Action, zone: str) -> str:
    """SQL for a trigger action: one row per trigger event visible in [$lo, $hi)."""
    assert action.trigger is not None
    gap, h = action.gap.seconds, action.gap.seconds + action.horizon.seconds
    same = "AND t.campaign_id = g.campaign_id" if action.target.same_campaign else ""
    occurs = "count(g.customer_id) > 0"
    label = occurs if action.outcome == "occurs" else f"NOT ({occurs})"
    cap = f"as_of + INTERVAL '{h} seconds'"
    start = f"as_of + INTERVAL '{gap} seconds'"
    if action.horizon_until is not None:
        # The window ends at the trigger's own end (a campaign's end date), never after the cap, never before
        # it starts; an unreadable value leaves the cap.
        until = until_sql(_column(action.horizon_until), zone)
        end = f"least({cap}, greatest({start}, coalesce({until}, {cap})))"
    else:
        end = cap
    vis = "greatest(event_time, available_at)"
    sql = f"""
        WITH trig AS (
            SELECT event_id AS trigger_id, customer_id, {vis} AS as_of, campaign_id,
                   {start.replace("as_of", vis)} AS w_lo, {end.replace("as_of", vis)} AS w_hi
            FROM events WHERE {event_filter_sql(action.trigger)}
              AND {vis} >= CAST(make_timestamp($lo) AS TIMESTAMPTZ)
              AND {vis} < CAST(make_timestamp($hi) AS TIMESTAMPTZ)
        ),
        tgt AS (SELECT customer_id, event_time, campaign_id FROM events WHERE {event_filter_sql(action.target)}),
        rows AS (
            SELECT t.trigger_id, t.customer_id, t.as_of, t.campaign_id, t.w_hi AS label_end,
                   CAST({label} AS TINYINT) AS label
            FROM trig t LEFT JOIN tgt g ON g.customer_id = t.customer_id {same}
                 AND g.event_time > t.w_lo AND g.event_time <= t.w_hi
            GROUP BY ALL
        )
    """
    elig = action.eligibility
    filters = []
    if elig.active_within is not None:
        lower = ""
        if not elig.active_within.is_lifetime:
            lower = f"AND e.event_time > r.as_of - INTERVAL '{int(elig.active_within.seconds)} seconds'"
        filters.append(
            f"""EXISTS (SELECT 1 FROM events e WHERE e.customer_id = r.customer_id
                AND e.event_type IN {_types(action.activity_types)}
                AND e.available_at <= r.as_of AND e.event_time <= r.as_of {lower})"""
        )
    if elig.due is not None:
        cycle = elig.due.cycle.seconds
        # Due within the label window: the last billing event e has e + cycle in (as_of + gap, as_of + gap + h],
        # the same rule as the cutoff query's [e + cycle - gap - h, e + cycle - gap) on cutoffs.
        lo, hi = cycle - h, cycle - gap
        filters.append(
            f"""EXISTS (SELECT 1 FROM events e WHERE e.customer_id = r.customer_id
                AND e.event_type IN {_types(elig.due.event_type)}
                AND e.available_at <= r.as_of AND e.event_time <= r.as_of
                AND e.event_time > r.as_of - INTERVAL '{hi} seconds'
                AND e.event_time <= r.as_of - INTERVAL '{lo} seconds')"""
        )
    if elig.attribute is not None:
        filters.append(
            f"(r.customer_id, r.as_of) IN (SELECT customer_id, as_of FROM ({attribute_condition_sql(elig.attribute, 'rows')}))"
        )
    where = " AND ".join(filters) or "TRUE"
    return sql + (
        " SELECT r.customer_id, r.as_of, r.label, r.label_end, r.campaign_id, r.trigger_id FROM rows r "
        f"WHERE {where}"
    )


def build_labels(
    con: duckdb.DuckDBPyConnection,
    action: Action,
    cutoffs: Sequence[datetime],
    *,
    data_end: datetime,
    slide: timedelta | None = None,
    align: datetime | None = None,
    until: datetime | None = None,
    zone: str = "UTC",
) -> pa.Table:
    """Eligible rows of ``action`` with matured labels: ``customer_id, as_of, label, label_end, campaign_id,
    trigger_id``.

    A cutoff action takes one row per eligible customer at each of ``cutoffs`` (any times: a grid, calendar
    months, an explicit list). A trigger action takes one row per trigger event visible in ``[min(cutoffs),
    until)`` (``until`` default: the last cutoff + ``slide``), as of the moment it was visible, with the trigger's
    ``event_id`` as ``trigger_id``; its ``label_end`` may come from the trigger (``horizon: until <field>``, read
    in ``zone``). Rows whose window (plus label delay) ends after ``data_end`` are left out (unmatured). Rows are
    sorted by ``as_of, customer_id`` (then ``trigger_id``). ``align`` is accepted for older callers and unused.
    """
    del align
    empty = pa.table(
        {
            "customer_id": pa.array([], pa.string()),
            "as_of": pa.array([], UTC_US),
            "label": pa.array([], pa.int8()),
            "label_end": pa.array([], UTC_US),
            "campaign_id": pa.array([], pa.string()),
            "trigger_id": pa.array([], pa.string()),
        }
    )
    if not cutoffs:
        return empty
    if action.trigger is None:
        times = sorted({_us(c) for c in cutoffs})
        cuts = pa.table({"k": pa.array(range(len(times)), pa.int64()), "t": pa.array(times, pa.int64())})
        name = f"_cutoffs_{next(_COUNTER)}"
        con.register(name, cuts)
        try:
            params = {"tmin": times[0], "tmax": times[-1]}
            table = con.sql(_cutoff_query(action, name), params=params).to_arrow_table()
        finally:
            con.unregister(name)
        as_of = table.column("as_of").cast(UTC_US)
        window = pa.scalar((action.gap.seconds + action.horizon.seconds) * US, pa.int64())
        end = pc.add(as_of.cast(pa.int64()), window).cast(UTC_US)
        table = pa.table(
            {
                "customer_id": table.column("customer_id"),
                "as_of": as_of,
                "label": table.column("label"),
                "label_end": end,
                "campaign_id": pa.nulls(table.num_rows, pa.string()),
                "trigger_id": pa.nulls(table.num_rows, pa.string()),
            }
        )
    else:
        if until is None and slide is None:
            raise ValueError("a trigger action needs `until` (or `slide`): where its triggers stop")
        lo = min(cutoffs)
        hi = until if until is not None else max(cutoffs) + (slide or timedelta(0))
        table = con.sql(_trigger_query(action, zone), params={"lo": _us(lo), "hi": _us(hi)}).to_arrow_table()
    if table.num_rows == 0:
        return empty
    end = table.column("label_end").cast(UTC_US)
    matured = pc.less_equal(
        pc.add(end.cast(pa.int64()), pa.scalar(action.label_delay.seconds * US, pa.int64())),
        pa.scalar(_us(data_end), pa.int64()),
    )
    out = pa.table(
        {
            "customer_id": table.column("customer_id").cast(pa.string()),
            "as_of": table.column("as_of").cast(UTC_US),
            "label": table.column("label").cast(pa.int8()),
            "label_end": end,
            "campaign_id": table.column("campaign_id").cast(pa.string()),
            "trigger_id": table.column("trigger_id").cast(pa.string()),
        }
    ).filter(matured)
    return out.sort_by([("as_of", "ascending"), ("customer_id", "ascending"), ("trigger_id", "ascending")])
