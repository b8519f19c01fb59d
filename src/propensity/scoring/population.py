"""Who a run scores: the customers known at a time and, for each action, who of them is eligible.

The first stage of batch scoring (:mod:`propensity.scoring.batch`). Eligibility is the rule training applies at
one cutoff (:func:`propensity.labels.labels.build_labels`), evaluated without the label work: for every action
without a trigger, all at once in one pass over the log (one flag per rule per action, aggregated by customer);
for a triggered action (respond), the customers with a trigger whose response window is still open.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from propensity.config.actions import Action
from propensity.config.predicates import sql_literal
from propensity.core.score_row import UTC_US
from propensity.labels.labels import attribute_condition_sql, build_labels

KNOWN_SQL = """
    SELECT DISTINCT customer_id FROM (
        SELECT customer_id FROM events WHERE available_at <= $t AND event_time <= $t
        UNION ALL
        SELECT customer_id FROM attributes WHERE greatest(valid_from, available_at) <= $t
    )
"""


def _in(values: Sequence[str]) -> str:
    return ", ".join(sql_literal(v) for v in sorted(set(values)))


def known_customers(con: duckdb.DuckDBPyConnection, as_of: datetime) -> pa.Array:
    """Every customer with an event or attribute visible at ``as_of``, sorted."""
    table = con.sql(f"{KNOWN_SQL} ORDER BY 1", params={"t": as_of}).to_arrow_table()
    return table.column(0).cast(pa.string()).combine_chunks()


def _cutoff_sql(actions: Sequence[Action], as_of: datetime, known: str = f"({KNOWN_SQL})") -> str:
    """One query: every known customer with one boolean column per action (``e0``, ``e1``, ...); ``known``: the
    relation of the known customers (a registered table of them saves computing them again)."""
    t_us = "epoch_us(CAST($t AS TIMESTAMPTZ))"
    flags: list[str] = []  # event flags, aggregated by customer in one pass over the log
    attrs: list[str] = []
    columns: list[str] = []
    types: set[str] = set()
    for k, action in enumerate(actions):
        elig = action.eligibility
        conds = ["TRUE"]
        if elig.active_within is not None:
            types |= set(action.activity_types)
            recent = ""
            if not elig.active_within.is_lifetime:
                recent = f" AND _et + {elig.active_within.seconds * 1_000_000} > {t_us}"
            flags.append(f"bool_or(event_type IN ({_in(action.activity_types)}){recent}) AS a{k}")
            conds.append(f"coalesce(ev.a{k}, FALSE)")
        if elig.due is not None:
            # Due in the label window: a billing event e with e + cycle in (as_of + gap, as_of + gap + horizon].
            types |= set(elig.due.event_type)
            cycle, gap, h = (
                x * 1_000_000 for x in (elig.due.cycle.seconds, action.gap.seconds, action.horizon.seconds)
            )
            flags.append(
                f"bool_or(event_type IN ({_in(elig.due.event_type)}) AND _et + {cycle - gap - h} <= {t_us}"
                f" AND _et + {cycle - gap} > {t_us}) AS d{k}"
            )
            conds.append(f"coalesce(ev.d{k}, FALSE)")
        if elig.unless_event_type:
            types |= set(elig.unless_event_type)
            flags.append(f"bool_or(event_type IN ({_in(elig.unless_event_type)})) AS x{k}")
            conds.append(f"NOT coalesce(ev.x{k}, FALSE)")
        if elig.attribute is not None:
            attrs.append(f"at{k} AS ({attribute_condition_sql(elig.attribute, 'known_at')})")
            conds.append(f"k.customer_id IN (SELECT customer_id FROM at{k})")
        columns.append(f"({' AND '.join(conds)}) AS e{k}")
    ctes = [
        f"known AS (SELECT customer_id FROM {known})",
        "known_at AS (SELECT customer_id, CAST($t AS TIMESTAMPTZ) AS as_of FROM known)",
    ]
    joins = ""
    if flags:
        # Visible by as_of: event_time and available_at both at or before it.
        ctes.append(
            f"ev AS (SELECT customer_id, {', '.join(flags)} FROM (SELECT customer_id, event_type, "
            f"epoch_us(event_time) AS _et FROM events WHERE event_type IN ({_in(sorted(types))}) "
            f"AND epoch_us(greatest(event_time, available_at)) <= {t_us}) GROUP BY customer_id)"
        )
        joins = " LEFT JOIN ev ON ev.customer_id = k.customer_id"
    ctes += attrs
    return f"WITH {', '.join(ctes)} SELECT k.customer_id, {', '.join(columns)} FROM known k{joins}"


def _triggered(con: duckdb.DuckDBPyConnection, action: Action, as_of: datetime, zone: str) -> pa.Array:
    """Customers with a trigger (a send) visible in the last gap + horizon whose own eligibility held then and
    whose response window is still open (it may close early: horizon: until a campaign's end date)."""
    window = action.gap.timedelta + action.horizon.timedelta
    far = as_of + action.span.timedelta + timedelta(days=1)
    table = build_labels(
        con, action, [as_of - window], until=as_of + timedelta(microseconds=1), data_end=far, zone=zone
    )
    table = table.filter(pc.greater(table.column("label_end"), pa.scalar(as_of, UTC_US)))
    ids = table.column("customer_id").cast(pa.string()).combine_chunks()
    return pc.unique(ids) if table.num_rows else pa.array([], pa.string())


def eligibility(
    con: duckdb.DuckDBPyConnection,
    customers: pa.Array,
    actions: Mapping[str, Action],
    as_of: datetime,
    *,
    zone: str = "UTC",
    known: bool = False,
) -> dict[str, np.ndarray]:
    """Per action, which of ``customers`` are eligible as of ``as_of`` (a boolean mask in their order).
    ``known``: ``customers`` are exactly the customers known as of ``as_of`` (:func:`known_customers`), which
    spares the query finding them again."""
    out: dict[str, np.ndarray] = {}
    plain = [(name, a) for name, a in actions.items() if a.trigger is None]
    if plain:
        relation = f"({KNOWN_SQL})"
        if known:
            con.register("_known_customers", pa.table({"customer_id": customers}))
            relation = "_known_customers"
        try:
            sql = _cutoff_sql([a for _, a in plain], as_of, relation)
            table = con.sql(sql, params={"t": as_of}).to_arrow_table()
        finally:
            if known:
                con.unregister("_known_customers")
        # Known customers in the order of ``customers`` (an unknown customer is eligible for nothing).
        pos = pc.index_in(customers, value_set=table.column("customer_id").cast(pa.string()))
        found = np.asarray(pos.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        idx = pos.fill_null(0).to_numpy(zero_copy_only=False)
        for k, (name, _) in enumerate(plain):
            flags = np.asarray(table.column(f"e{k}").fill_null(False).to_numpy(zero_copy_only=False), bool)
            out[name] = found & flags[idx] if len(flags) else np.zeros(len(customers), bool)
    for name, action in actions.items():
        if action.trigger is not None:
            hit = pc.is_in(customers, value_set=_triggered(con, action, as_of, zone))
            out[name] = np.asarray(hit.to_numpy(zero_copy_only=False), dtype=bool)
    return {name: out[name] for name in actions}


def eligible_customers(
    con: duckdb.DuckDBPyConnection, action: Action, as_of: datetime, *, zone: str = "UTC"
) -> pa.Array:
    """The customers eligible for ``action`` as of ``as_of``, by the rules training applies at a cutoff.

    A cutoff action's conditions are those of :func:`propensity.labels.labels.build_labels` at the single
    cutoff ``as_of``, evaluated without the label work (a test checks both give the same customers): known by
    then; activity in ``(as_of - active_within, as_of]``; a billing event due in the label window; the
    attribute as of ``as_of``. A trigger action (respond) is eligible for customers with a trigger (a send)
    visible in the last gap + horizon whose own eligibility held then: that send's response window is open.
    """
    if action.trigger is not None:
        return _triggered(con, action, as_of, zone)
    table = con.sql(_cutoff_sql([action], as_of), params={"t": as_of}).to_arrow_table()
    ids = table.column("customer_id").cast(pa.string())
    return ids.filter(table.column("e0").fill_null(False)).combine_chunks()
