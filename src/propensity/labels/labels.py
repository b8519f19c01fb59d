"""Labels and eligibility: for an action, the eligible (customer, as_of) rows and their labels, in SQL.

The label of (c, t) is about events with ``event_time`` in ``(t + gap, t + gap + horizon]`` (DESIGN.md,
"Labels"); ``outcome: absent`` turns it into "no such event" (churn). Eligibility only ever looks at what was
visible at t (``available_at <= t``): activity in ``(t - active_within, t]``, the attribute as of t, the latest
billing event's due date. Cutoff actions use a grid of cutoffs, so each event is mapped arithmetically to the few
cutoffs it affects instead of joining every event with every cutoff; trigger actions (respond) take one row per
trigger event, as of the moment it was visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from propensity.config.actions import Action, AttributeCondition, EventFilter
from propensity.config.predicates import PROPERTIES_PREFIX, sql_literal

LABEL_COLUMNS = ("customer_id", "as_of", "label", "label_end", "campaign_id")


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


def _k_lo(expr: str) -> str:
    return f"CAST(ceil(({expr} - $align)::DOUBLE / $slide) AS BIGINT)"


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


def _grid_query(action: Action) -> str:
    """SQL for a cutoff action over the grid ``$align + k × $slide`` with k in [$k0, $k1] (epoch µs)."""
    gap, h = action.gap.seconds * 1_000_000, action.horizon.seconds * 1_000_000
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
        base AS (
            SELECT customer_id, unnest(range(greatest($k0, {_k_lo("first_us")}), $k1 + 1)) AS k FROM known
        ),
        hits AS (
            SELECT DISTINCT customer_id, unnest(range(
                greatest($k0, {_k_lo(f"{ev_us} - {gap + h}")}),
                least($k1 + 1, {_k_lo(f"{ev_us} - {gap}")})
            )) AS k
            FROM events WHERE {event_filter_sql(action.target)}
        )"""
    ]
    filters = []
    elig = action.eligibility
    if elig.active_within is not None:
        d = elig.active_within.seconds * 1_000_000
        parts.append(
            f"""
        active AS (
            SELECT DISTINCT customer_id, unnest(range(
                greatest($k0, {_k_lo(vis_us)}), least($k1 + 1, {_k_lo(f"{ev_us} + {d}")})
            )) AS k
            FROM events WHERE event_type IN {_types(action.activity_types)}
        )"""
        )
        filters.append("(b.customer_id, b.k) IN (SELECT customer_id, k FROM active)")
    if elig.due is not None:
        cycle = elig.due.cycle.seconds * 1_000_000
        parts.append(
            f"""
        due AS (
            SELECT DISTINCT customer_id, unnest(range(
                greatest($k0, {_k_lo(vis_us)}, {_k_lo(f"{ev_us} + {cycle - gap - h}")}),
                least($k1 + 1, {_k_lo(f"{ev_us} + {cycle - gap}")})
            )) AS k
            FROM events WHERE event_type IN {_types(elig.due.event_type)}
        )"""
        )
        filters.append("(b.customer_id, b.k) IN (SELECT customer_id, k FROM due)")
    occurs = "h.k IS NOT NULL"
    label = occurs if action.outcome == "occurs" else f"NOT ({occurs})"
    where = " AND ".join(filters) or "TRUE"
    sql = f"""
        WITH {",".join(parts)},
        rows AS (
            SELECT b.customer_id, CAST(make_timestamp($align + b.k * $slide) AS TIMESTAMPTZ) AS as_of,
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


def _trigger_query(action: Action) -> str:
    """SQL for a trigger action: one row per trigger event visible in [$lo, $hi)."""
    assert action.trigger is not None
    gap, h = action.gap.timedelta, action.horizon.timedelta
    same = "AND t.campaign_id = g.campaign_id" if action.target.same_campaign else ""
    occurs = "count(g.customer_id) > 0"
    label = occurs if action.outcome == "occurs" else f"NOT ({occurs})"
    sql = f"""
        WITH trig AS (
            SELECT DISTINCT customer_id, greatest(event_time, available_at) AS as_of, campaign_id
            FROM events WHERE {event_filter_sql(action.trigger)}
              AND greatest(event_time, available_at) >= CAST(make_timestamp($lo) AS TIMESTAMPTZ)
              AND greatest(event_time, available_at) < CAST(make_timestamp($hi) AS TIMESTAMPTZ)
        ),
        tgt AS (SELECT customer_id, event_time, campaign_id FROM events WHERE {event_filter_sql(action.target)}),
        rows AS (
            SELECT t.customer_id, t.as_of, t.campaign_id, CAST({label} AS TINYINT) AS label
            FROM trig t LEFT JOIN tgt g ON g.customer_id = t.customer_id {same}
                 AND g.event_time > t.as_of + INTERVAL '{int(gap.total_seconds())} seconds'
                 AND g.event_time <= t.as_of + INTERVAL '{int((gap + h).total_seconds())} seconds'
            GROUP BY ALL
        )
    """
    elig = action.eligibility
    filters = []
    if elig.active_within is not None:
        d = int(elig.active_within.seconds)
        filters.append(
            f"""EXISTS (SELECT 1 FROM events e WHERE e.customer_id = r.customer_id
                AND e.event_type IN {_types(action.activity_types)}
                AND e.available_at <= r.as_of AND e.event_time <= r.as_of
                AND e.event_time > r.as_of - INTERVAL '{d} seconds')"""
        )
    if elig.due is not None:
        cycle = elig.due.cycle.timedelta
        # Due within the label window: the last billing event e has e + cycle in (as_of + gap, as_of + gap + h],
        # the same rule as the grid query's [e + cycle - gap - h, e + cycle - gap) on cutoffs.
        lo, hi = cycle - gap - h, cycle - gap
        filters.append(
            f"""EXISTS (SELECT 1 FROM events e WHERE e.customer_id = r.customer_id
                AND e.event_type IN {_types(elig.due.event_type)}
                AND e.available_at <= r.as_of AND e.event_time <= r.as_of
                AND e.event_time > r.as_of - INTERVAL '{int(hi.total_seconds())} seconds'
                AND e.event_time <= r.as_of - INTERVAL '{int(lo.total_seconds())} seconds')"""
        )
    if elig.attribute is not None:
        filters.append(
            f"(r.customer_id, r.as_of) IN (SELECT customer_id, as_of FROM ({attribute_condition_sql(elig.attribute, 'rows')}))"
        )
    where = " AND ".join(filters) or "TRUE"
    return sql + f" SELECT r.customer_id, r.as_of, r.label, r.campaign_id FROM rows r WHERE {where}"


def build_labels(
    con: duckdb.DuckDBPyConnection,
    action: Action,
    cutoffs: Sequence[datetime],
    *,
    slide: timedelta,
    align: datetime,
    data_end: datetime,
) -> pa.Table:
    """Eligible rows of ``action`` with matured labels: ``customer_id, as_of, label, label_end, campaign_id``.

    ``cutoffs`` must lie on the grid ``align + k × slide``. A trigger action takes its triggers from the first
    cutoff up to one ``slide`` after the last. Rows whose window (plus label delay) ends after ``data_end`` are
    left out (unmatured). Rows are sorted by ``as_of, customer_id``.
    """
    empty = pa.table(
        {
            "customer_id": pa.array([], pa.string()),
            "as_of": pa.array([], pa.timestamp("us", tz="UTC")),
            "label": pa.array([], pa.int8()),
            "label_end": pa.array([], pa.timestamp("us", tz="UTC")),
            "campaign_id": pa.array([], pa.string()),
        }
    )
    if not cutoffs:
        return empty
    slide_us = int(slide.total_seconds()) * 1_000_000
    align_us = _us(align)
    if action.trigger is None:
        ks = sorted((_us(c) - align_us) // slide_us for c in cutoffs)
        if any((_us(c) - align_us) % slide_us for c in cutoffs) or ks != list(range(ks[0], ks[-1] + 1)):
            raise ValueError("cutoffs must be consecutive points of the grid align + k × slide")
        sql = _grid_query(action)
        params = {"align": align_us, "slide": slide_us, "k0": ks[0], "k1": ks[-1]}
        table = con.sql(sql, params=params).to_arrow_table()
        table = table.append_column("campaign_id", pa.nulls(table.num_rows, pa.string()))
    else:
        lo, hi = min(cutoffs), max(cutoffs) + slide
        table = con.sql(_trigger_query(action), params={"lo": _us(lo), "hi": _us(hi)}).to_arrow_table()
    if table.num_rows == 0:
        return empty
    as_of = table.column("as_of").cast(pa.timestamp("us", tz="UTC"))
    window = pa.scalar((action.gap.seconds + action.horizon.seconds) * 1_000_000, pa.int64())
    end = pc.add(as_of.cast(pa.int64()), window).cast(pa.timestamp("us", tz="UTC"))
    matured = pc.less_equal(
        pc.add(end.cast(pa.int64()), pa.scalar(action.label_delay.seconds * 1_000_000, pa.int64())),
        pa.scalar(_us(data_end), pa.int64()),
    )
    out = pa.table(
        {
            "customer_id": table.column("customer_id").cast(pa.string()),
            "as_of": as_of,
            "label": table.column("label").cast(pa.int8()),
            "label_end": end,
            "campaign_id": table.column("campaign_id").cast(pa.string()),
        }
    ).filter(matured)
    return out.sort_by([("as_of", "ascending"), ("customer_id", "ascending")])
