"""Labels and eligibility: for an action, the eligible (customer, as_of) rows and their labels, in SQL.

The label of (c, t) is about events with ``event_time`` in ``(t + gap, t + gap + horizon]`` (DESIGN.md,
"Labels"); ``outcome: absent`` turns it into "no such event" (churn). Eligibility only ever looks at what was
visible at t (``available_at <= t``): activity in ``(t - active_within, t]``, no ``unless_event_type`` event by t,
the attribute as of t, the latest
billing event's due date. Cutoff actions take rows at a list of cutoffs (a grid, calendar months or explicit
dates): each event is range-joined to the few cutoffs it affects instead of joining every event with every
cutoff; trigger actions (respond) take one row per trigger event, as of the moment it was visible, and their
window may end at a time the trigger carries (``horizon: until properties.end_date``).

The SQL is written once and spelt for DuckDB or Spark SQL by a :class:`~propensity.features.dialects.Dialect`:
:func:`build_labels` runs it on DuckDB, :func:`build_labels_spark` on Spark (the parity test holds them equal).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from propensity.config.actions import Action, AttributeCondition, EventFilter
from propensity.config.predicates import DATE_PATTERN, DATE_TZ_PATTERN, PROPERTIES_PREFIX
from propensity.features.dialects import DUCKDB, SPARK, Dialect

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


LABEL_COLUMNS = ("customer_id", "as_of", "label", "label_end", "campaign_id", "trigger_id")
UTC_US = pa.timestamp("us", tz="UTC")
US = 1_000_000
DAY_PATTERN = r"^\d{4}-\d{2}-\d{2}$"
_COUNTER = itertools.count()


def _column(field: str, d: Dialect = DUCKDB) -> str:
    if field.startswith(PROPERTIES_PREFIX):
        return d.json_text("properties", field[len(PROPERTIES_PREFIX) :])
    return field


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(t: datetime) -> int:
    """Exact microseconds since the epoch (no float rounding)."""
    return (t - _EPOCH) // timedelta(microseconds=1)


def _types(types: Sequence[str], d: Dialect = DUCKDB) -> str:
    return "(" + ", ".join(d.literal(t) for t in sorted(set(types))) + ")"


def event_filter_sql(f: EventFilter, *, types: Sequence[str] | None = None, dialect: Dialect = DUCKDB) -> str:
    """A WHERE condition selecting the filter's events."""
    d = dialect
    cond = f"event_type IN {_types(types or f.event_type, d)}"
    pred = f.predicate
    if pred is not None:
        cond += f" AND {pred.sql(lambda field: _column(field, d), d.literal)}"
    return cond


def attribute_condition_sql(cond: AttributeCondition, rows: str, dialect: Dialect = DUCKDB) -> str:
    """Rows of ``rows`` (customer_id, as_of) whose attribute as of as_of satisfies ``cond``: the version known
    latest by as_of (``greatest(valid_from, available_at)``; ties: the greater value) has an allowed value."""
    d = dialect
    values = cond.in_ if cond.in_ is not None else cond.not_in
    assert values is not None
    test = "IN" if cond.in_ is not None else "NOT IN"
    key = d.row("a.known_from", "COALESCE(a.value, '')", "a.value IS NOT NULL")
    return f"""
        SELECT customer_id, as_of FROM (
            SELECT r.customer_id, r.as_of, {d.arg_max(d.struct_v("a.value"), key)} AS latest
            FROM {rows} r JOIN (
                SELECT customer_id, greatest(valid_from, available_at) AS known_from, value
                FROM attributes WHERE attribute = {d.literal(cond.name)}
            ) a ON a.customer_id = r.customer_id AND a.known_from <= r.as_of
            GROUP BY r.customer_id, r.as_of
        ) WHERE latest.v IS NOT NULL AND latest.v {test} {_types(values, d)}
    """


def _cutoff_query(action: Action, cuts: str, tmin: int, tmax: int, d: Dialect = DUCKDB) -> str:
    """SQL for a cutoff action at the cutoffs of relation ``cuts`` (``k``: index, ``t``: epoch µs).

    Each event is joined to the few cutoffs it affects (a range join on the small cutoffs table), so any list of
    cutoffs works: a weekly grid, calendar months, or explicit dates. ``tmin`` / ``tmax``: first / last cutoff.
    """
    gap, h = action.gap.seconds * US, action.horizon.seconds * US
    ev_us = d.epoch_us("event_time")
    vis_us = d.epoch_us("greatest(event_time, available_at)")
    parts = [
        f"""
        known AS (
            SELECT customer_id, min(first_us) AS first_us FROM (
                SELECT customer_id, min({vis_us}) AS first_us FROM events GROUP BY customer_id
                UNION ALL
                SELECT customer_id, min({d.epoch_us("greatest(valid_from, available_at)")}) FROM attributes
                GROUP BY customer_id
            ) GROUP BY customer_id
        ),
        base AS (SELECT kn.customer_id, c.k, c.t FROM known kn JOIN {cuts} c ON c.t >= kn.first_us),
        hits AS (
            SELECT DISTINCT e.customer_id, c.k FROM (
                SELECT customer_id, {ev_us} AS et FROM events
                WHERE {event_filter_sql(action.target, dialect=d)} AND {ev_us} > {tmin + gap}
                  AND {ev_us} <= {tmax + gap + h}
            ) e JOIN {cuts} c ON c.t >= e.et - {gap + h} AND c.t < e.et - {gap}
        )"""
    ]
    filters = []
    elig = action.eligibility
    if elig.active_within is not None:
        types = _types(action.activity_types, d)
        if elig.active_within.is_lifetime:
            parts.append(
                f"""
        active AS (
            SELECT e.customer_id, c.k FROM (
                SELECT customer_id, min({vis_us}) AS vis FROM events WHERE event_type IN {types}
                GROUP BY customer_id
            ) e JOIN {cuts} c ON c.t >= e.vis
        )"""
            )
        else:
            dur = elig.active_within.seconds * US
            parts.append(
                f"""
        active AS (
            SELECT DISTINCT e.customer_id, c.k FROM (
                SELECT customer_id, {ev_us} AS et, {vis_us} AS vis FROM events
                WHERE event_type IN {types} AND {vis_us} <= {tmax} AND {ev_us} + {dur} > {tmin}
            ) e JOIN {cuts} c ON c.t >= e.vis AND c.t < e.et + {dur}
        )"""
            )
        filters.append("EXISTS (SELECT 1 FROM active x WHERE x.customer_id = b.customer_id AND x.k = b.k)")
    if elig.unless_event_type:
        parts.append(
            f"""
        excluded AS (
            SELECT e.customer_id, c.k FROM (
                SELECT customer_id, min({vis_us}) AS vis FROM events
                WHERE event_type IN {_types(elig.unless_event_type, d)} GROUP BY customer_id
            ) e JOIN {cuts} c ON c.t >= e.vis
        )"""
        )
        filters.append(
            "NOT EXISTS (SELECT 1 FROM excluded x WHERE x.customer_id = b.customer_id AND x.k = b.k)"
        )
    if elig.due is not None:
        cycle = elig.due.cycle.seconds * US
        parts.append(
            f"""
        due AS (
            SELECT DISTINCT e.customer_id, c.k FROM (
                SELECT customer_id, {ev_us} AS et, {vis_us} AS vis FROM events
                WHERE event_type IN {_types(elig.due.event_type, d)} AND {vis_us} <= {tmax}
                  AND {ev_us} + {cycle - gap} > {tmin}
            ) e JOIN {cuts} c ON c.t >= greatest(e.vis, e.et + {cycle - gap - h}) AND c.t < e.et + {cycle - gap}
        )"""
        )
        filters.append("EXISTS (SELECT 1 FROM due x WHERE x.customer_id = b.customer_id AND x.k = b.k)")
    occurs = "h.k IS NOT NULL"
    label = occurs if action.outcome == "occurs" else f"NOT ({occurs})"
    where = " AND ".join(filters) or "TRUE"
    sql = f"""
        WITH {",".join(parts)},
        rows AS (
            SELECT b.customer_id, {d.timestamp_of_us("b.t")} AS as_of,
                   CAST({label} AS TINYINT) AS label
            FROM base b LEFT JOIN hits h ON h.customer_id = b.customer_id AND h.k = b.k
            WHERE {where}
        )
    """
    if elig.attribute is not None:
        sql += f", elig AS ({attribute_condition_sql(elig.attribute, 'rows', d)})"
        sql += f"""
        SELECT r.* FROM rows r {d.semi_join} elig e ON e.customer_id = r.customer_id AND e.as_of = r.as_of
        """
    else:
        sql += " SELECT * FROM rows"
    return sql


def until_sql(text: str, zone: str, dialect: Dialect = DUCKDB) -> str:
    """SQL: the end of a label window held as text (``horizon: until <field>``), in epoch µs, or NULL.

    A date alone (``2017-11-05``) is the end of that day in ``zone`` (its last microsecond); a time with
    an offset is that instant; a time without one is a wall-clock time in ``zone``."""
    d = dialect
    return f"""(CASE
        WHEN {d.full_match(text, DAY_PATTERN)}
            THEN {d.wall_clock_us(text, zone, next_day=True)} - 1
        WHEN {d.full_match(text, DATE_TZ_PATTERN)}
            THEN {d.timestamp_us(text, True)}
        WHEN {d.full_match(text, DATE_PATTERN)}
            THEN {d.wall_clock_us(text, zone)}
    END)"""


def _trigger_query(action: Action, zone: str, lo: int, hi: int, d: Dialect = DUCKDB) -> str:
    """SQL for a trigger action: one row per trigger event visible in [lo, hi) (epoch µs)."""
    assert action.trigger is not None
    gap, h = action.gap.seconds * US, (action.gap.seconds + action.horizon.seconds) * US
    same = "AND t.campaign_id = g.campaign_id" if action.target.same_campaign else ""
    occurs = "count(g.customer_id) > 0"
    label = occurs if action.outcome == "occurs" else f"NOT ({occurs})"
    vis = d.epoch_us("greatest(event_time, available_at)")
    cap = f"{vis} + {h}"
    start = f"{vis} + {gap}"
    if action.horizon_until is not None:
        # The window ends at the trigger's own end (a campaign's end date), never after the cap, never before
        # it starts; an unreadable value leaves the cap.
        until = until_sql(_column(action.horizon_until, d), zone, d)
        end = f"least({cap}, greatest({start}, coalesce({until}, {cap})))"
    else:
        end = cap
    sql = f"""
        WITH trig AS (
            SELECT event_id AS trigger_id, customer_id, greatest(event_time, available_at) AS as_of,
                   {vis} AS _t, campaign_id, {start} AS w_lo, {end} AS w_hi
            FROM events WHERE {event_filter_sql(action.trigger, dialect=d)}
              AND {vis} >= {lo} AND {vis} < {hi}
        ),
        tgt AS (SELECT customer_id, {d.epoch_us("event_time")} AS _et, campaign_id FROM events
                WHERE {event_filter_sql(action.target, dialect=d)}),
        rows AS (
            SELECT t.trigger_id, t.customer_id, t.as_of, t._t, t.campaign_id, t.w_hi,
                   CAST({label} AS TINYINT) AS label
            FROM trig t LEFT JOIN tgt g ON g.customer_id = t.customer_id {same}
                 AND g._et > t.w_lo AND g._et <= t.w_hi
            GROUP BY t.trigger_id, t.customer_id, t.as_of, t._t, t.campaign_id, t.w_hi
        )
    """
    elig = action.eligibility
    filters = []
    ev_us = d.epoch_us("e.event_time")
    if elig.active_within is not None:
        lower = ""
        if not elig.active_within.is_lifetime:
            lower = f"AND {ev_us} > r._t - {elig.active_within.seconds * US}"
        filters.append(
            f"""EXISTS (SELECT 1 FROM events e WHERE e.customer_id = r.customer_id
                AND e.event_type IN {_types(action.activity_types, d)}
                AND e.available_at <= r.as_of AND e.event_time <= r.as_of {lower})"""
        )
    if elig.due is not None:
        cycle = elig.due.cycle.seconds * US
        # Due within the label window: the last billing event e has e + cycle in (as_of + gap, as_of + gap + h],
        # the same rule as the cutoff query's [e + cycle - gap - h, e + cycle - gap) on cutoffs.
        lo_d, hi_d = cycle - h, cycle - gap
        filters.append(
            f"""EXISTS (SELECT 1 FROM events e WHERE e.customer_id = r.customer_id
                AND e.event_type IN {_types(elig.due.event_type, d)}
                AND e.available_at <= r.as_of AND e.event_time <= r.as_of
                AND {ev_us} > r._t - {hi_d} AND {ev_us} <= r._t - {lo_d})"""
        )
    if elig.attribute is not None:
        filters.append(
            f"EXISTS (SELECT 1 FROM ({attribute_condition_sql(elig.attribute, 'rows', d)}) x "
            "WHERE x.customer_id = r.customer_id AND x.as_of = r.as_of)"
        )
    if elig.unless_event_type:
        filters.append(
            f"""NOT EXISTS (SELECT 1 FROM events e WHERE e.customer_id = r.customer_id
                AND e.event_type IN {_types(elig.unless_event_type, d)}
                AND e.available_at <= r.as_of AND e.event_time <= r.as_of)"""
        )
    where = " AND ".join(filters) or "TRUE"
    return sql + (
        f" SELECT r.customer_id, r.as_of, r.label, {d.timestamp_of_us('r.w_hi')} AS label_end, r.campaign_id, "
        f"r.trigger_id FROM rows r WHERE {where}"
    )


class _Runner(Protocol):
    """Runs the label SQL on one engine."""

    def cutoffs(self, action: Action, cuts: pa.Table, tmin: int, tmax: int) -> pa.Table: ...

    def triggers(self, action: Action, zone: str, lo: int, hi: int) -> pa.Table: ...


class _DuckDBRunner:
    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def cutoffs(self, action: Action, cuts: pa.Table, tmin: int, tmax: int) -> pa.Table:
        name = f"_cutoffs_{next(_COUNTER)}"
        self.con.register(name, cuts)
        try:
            return self.con.sql(_cutoff_query(action, name, tmin, tmax)).to_arrow_table()
        finally:
            self.con.unregister(name)

    def triggers(self, action: Action, zone: str, lo: int, hi: int) -> pa.Table:
        return self.con.sql(_trigger_query(action, zone, lo, hi)).to_arrow_table()


class _SparkRunner:
    def __init__(self, spark: SparkSession, events: DataFrame, attributes: DataFrame) -> None:
        self.spark = spark
        events.createOrReplaceTempView("events")
        attributes.createOrReplaceTempView("attributes")

    def cutoffs(self, action: Action, cuts: pa.Table, tmin: int, tmax: int) -> pa.Table:
        name = f"_cutoffs_{next(_COUNTER)}"
        self.spark.createDataFrame(cuts).createOrReplaceTempView(name)
        return self.spark.sql(_cutoff_query(action, name, tmin, tmax, SPARK)).toArrow()

    def triggers(self, action: Action, zone: str, lo: int, hi: int) -> pa.Table:
        return self.spark.sql(_trigger_query(action, zone, lo, hi, SPARK)).toArrow()


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
    engine: _Runner | None = None,
) -> pa.Table:
    """Eligible rows of ``action`` with matured labels: ``customer_id, as_of, label, label_end, campaign_id,
    trigger_id``.

    A cutoff action takes one row per eligible customer at each of ``cutoffs`` (any times: a grid, calendar
    months, an explicit list). A trigger action takes one row per trigger event visible in ``[min(cutoffs),
    until)`` (``until`` default: the last cutoff + ``slide``), as of the moment it was visible, with the trigger's
    ``event_id`` as ``trigger_id``; its ``label_end`` may come from the trigger (``horizon: until <field>``, read
    in ``zone``). Rows whose window (plus label delay) ends after ``data_end`` are left out (unmatured). Rows are
    sorted by ``as_of, customer_id`` (then ``trigger_id``). ``align`` is accepted for older callers and unused.
    ``engine``: where the SQL runs (default: DuckDB over ``con``; :func:`build_labels_spark` passes Spark).
    """
    del align
    run = engine or _DuckDBRunner(con)
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
        table = run.cutoffs(action, cuts, times[0], times[-1])
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
        table = run.triggers(action, zone, _us(lo), _us(hi))
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


def build_labels_spark(
    spark: SparkSession,
    events: DataFrame,
    attributes: DataFrame,
    action: Action,
    cutoffs: Sequence[datetime],
    *,
    data_end: datetime,
    slide: timedelta | None = None,
    until: datetime | None = None,
    zone: str = "UTC",
) -> pa.Table:
    """:func:`build_labels` on Spark: the same SQL in Spark's spelling over ``events`` / ``attributes``."""
    return build_labels(
        None,  # type: ignore[arg-type]
        action,
        cutoffs,
        data_end=data_end,
        slide=slide,
        until=until,
        zone=zone,
        engine=_SparkRunner(spark, events, attributes),
    )
