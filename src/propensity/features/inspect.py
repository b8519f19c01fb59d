"""Looking at features: replaying the log through the online engine, comparing engines, explaining values.

Nothing here computes a feature on its own: values come from the two engines (:func:`compute_features` and
:class:`OnlineFeatureEngine`). This module only drives them for inspection and testing:

* :func:`replay_online` feeds the event log to a fresh online engine in ``available_at`` order and reads each
  spine row's vector exactly when the engine has seen every event available by that row's ``as_of`` (and
  nothing later), which is the only moment an online read is comparable with the offline value;
* :func:`mismatches` compares the two engines value by value (integers, strings, booleans and nulls exactly;
  floats within 1e-9);
* :func:`feature_vector`, :func:`explain_feature` and :func:`describe_features` back ``propensity features
  show`` and ``propensity features describe``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from propensity.config.features import (
    AggregateFeature,
    AnyFeature,
    AttributeFeature,
    DerivedFeature,
    SessionFeature,
    TriggerFeature,
)
from propensity.config.predicates import EVENT_DATE, PROPERTIES_PREFIX
from propensity.core.hashing import sample_key_sql
from propensity.features._plan import US, FeaturePlan, _window_of
from propensity.features.dialects import DUCKDB
from propensity.features.offline import compute_features
from propensity.features.online import OnlineFeatureEngine, to_micros

_ATTR_COLUMNS = ("customer_id", "attribute", "value", "source", "valid_from", "available_at")


def _plan(features: Sequence[AnyFeature] | FeaturePlan) -> FeaturePlan:
    return features if isinstance(features, FeaturePlan) else FeaturePlan(features)


def replay_online(
    con: duckdb.DuckDBPyConnection,
    features: Sequence[AnyFeature] | FeaturePlan,
    spine: pa.Table,
    *,
    events_table: str = "events",
    attributes_table: str | None = "attributes",
    batch_rows: int = 200_000,
) -> list[tuple[Any, ...]]:
    """The online engine's vector for every spine row, in the spine's order.

    Events (and attribute versions) are applied in ``available_at`` order (ties by ``event_id``); before the
    rows of each distinct ``as_of`` t are read, exactly the events with ``available_at <= t`` have been
    applied. So every read is at or after each customer's floor, and the values must equal the offline
    engine's for the same rows.
    """
    plan = _plan(features)
    engine = OnlineFeatureEngine(plan.features)
    customers = spine.column("customer_id").cast(pa.string()).to_pylist()
    times = [to_micros(t) for t in spine.column("as_of").to_pylist()]
    order = sorted(range(len(times)), key=times.__getitem__)
    attrs: list[dict[str, Any]] = []
    if attributes_table is not None and any(isinstance(f, AttributeFeature) for f in plan.features):
        con.execute(
            "SELECT customer_id, attribute, value, source, epoch_us(valid_from), epoch_us(available_at) "
            f"FROM {attributes_table} ORDER BY 6"
        )
        attrs = [dict(zip(_ATTR_COLUMNS, r, strict=True)) for r in con.fetchall()]
    attr_times = [a["available_at"] for a in attrs]
    reader = con.sql(f"SELECT * FROM {events_table} ORDER BY available_at, event_id").to_arrow_reader(
        batch_rows
    )
    pending: pa.Table | None = None  # events read but not yet applied (available after the last cutoff)
    done_attrs = 0
    out: list[tuple[Any, ...] | None] = [None] * len(times)
    exhausted = False
    i = 0
    while i < len(order):
        t = times[order[i]]
        # Apply every event with available_at <= t.
        while True:
            if pending is None or pending.num_rows == 0:
                if exhausted:
                    break
                try:
                    pending = pa.Table.from_batches([reader.read_next_batch()])
                except StopIteration:
                    exhausted = True
                    pending = None
                    break
            av = pc.cast(pending.column("available_at"), pa.int64())
            n_due = int(pc.sum(pc.less_equal(av, pa.scalar(t, pa.int64()))).as_py() or 0)
            if n_due:
                engine.apply_batch(pending.slice(0, n_due))
            if n_due < pending.num_rows:
                pending = pending.slice(n_due)
                break
            pending = None
        upto = bisect.bisect_right(attr_times, t)
        for row in attrs[done_attrs:upto]:
            engine.apply_attribute(row)
        done_attrs = max(done_attrs, upto)
        while i < len(order) and times[order[i]] == t:
            k = order[i]
            out[k] = engine.vector(customers[k], t)
            i += 1
    return [v for v in out if v is not None]


def same_value(a: Any, b: Any) -> bool:
    """Integers, strings, booleans and nulls exactly; floats within 1e-9 (relative or absolute)."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b) and type(a) is type(b)


@dataclass(frozen=True)
class Mismatch:
    """One value on which the engines disagree."""

    row: int
    customer_id: str
    as_of: datetime
    feature: str
    offline: Any
    online: Any


def mismatches(
    offline: pa.Table, online: Sequence[Sequence[Any]], names: Sequence[str], *, limit: int | None = None
) -> tuple[int, list[Mismatch]]:
    """Compare every value: returns (values compared, the mismatches, at most ``limit`` of them)."""
    columns = [offline.column(n).to_pylist() for n in names]
    cids = offline.column("customer_id").to_pylist()
    as_of = offline.column("as_of").to_pylist()
    bad: list[Mismatch] = []
    compared = 0
    for j, (name, col) in enumerate(zip(names, columns, strict=True)):
        for r, value in enumerate(col):
            compared += 1
            other = online[r][j]
            if not same_value(value, other) and (limit is None or len(bad) < limit):
                bad.append(Mismatch(r, cids[r], as_of[r], name, value, other))
    return compared, bad


# ------------------------------------------------------------------------------------------------ show/explain


def feature_vector(
    con: duckdb.DuckDBPyConnection,
    features: Sequence[AnyFeature] | FeaturePlan,
    customer_id: str,
    as_of: datetime,
) -> dict[str, Any]:
    """One customer's vector as of a time, computed by the offline engine."""
    plan = _plan(features)
    spine = pa.table(
        {"customer_id": pa.array([customer_id]), "as_of": pa.array([as_of], pa.timestamp("us", tz="UTC"))}
    )
    row = compute_features(con, plan, spine).to_pylist()[0]
    return {n: row[n] for n in plan.names}


def _column_sql(field: str, zone: str = "UTC") -> str:
    if field == EVENT_DATE:
        return DUCKDB.local_date("event_time", zone)
    if field.startswith(PROPERTIES_PREFIX):
        key = field[len(PROPERTIES_PREFIX) :]
        return f"json_extract_string(properties, '$.{key}')"
    return field


@dataclass(frozen=True)
class Explanation:
    """Why a feature has its value: the contributing events, or the features a derived one is made of."""

    feature: str
    kind: str
    summary: str
    columns: tuple[str, ...] = ()
    rows: tuple[tuple[Any, ...], ...] = ()
    total_rows: int = 0


def explain_feature(
    con: duckdb.DuckDBPyConnection,
    feature: AnyFeature,
    customer_id: str,
    as_of: datetime,
    *,
    limit: int = 10,
    events_table: str = "events",
    attributes_table: str = "attributes",
) -> Explanation:
    """The events (or attribute versions, or input features) that fed one feature of one customer as of t.

    For an aggregate: the customer's events visible at t (``available_at <= t`` and ``event_time <= t``)
    that pass the feature's event types and ``where:``, inside its bucketed window; the newest ``limit`` are
    listed and all are counted. For a session feature: the session events in its lookback (or window). For an
    attribute: its versions visible at t. For a derived feature: the expression and its inputs.
    """
    t_us = to_micros(as_of)
    if isinstance(feature, DerivedFeature):
        refs = ", ".join(sorted(feature.expression.refs()))
        return Explanation(feature.name, "derived", f"derived from {refs}: {' '.join(feature.expr.split())}")
    if isinstance(feature, TriggerFeature):
        return Explanation(
            feature.name, "trigger", f"{feature.field} of the row's trigger event (null without a trigger)"
        )
    if isinstance(feature, AttributeFeature):
        sql = (
            f"SELECT valid_from, available_at, value, source FROM {attributes_table} "
            "WHERE customer_id = ? AND attribute = ? AND epoch_us(available_at) <= ? "
            + ("AND source = ? " if feature.source else "")
            + "ORDER BY valid_from DESC, available_at DESC"
        )
        params: list[Any] = [customer_id, feature.attribute, t_us]
        if feature.source:
            params.append(feature.source)
        rows = con.execute(sql, params).fetchall()
        shown = [r for r in rows if to_micros(r[0]) <= t_us]
        return Explanation(
            feature.name,
            "attribute",
            f"attribute {feature.attribute!r} ({feature.type}): the version with the latest valid_from <= as_of",
            ("valid_from", "available_at", "value", "source"),
            tuple(tuple(r) for r in shown[:limit]),
            len(shown),
        )
    conds = [
        "customer_id = $cid",
        "epoch_us(available_at) <= $t",
        "epoch_us(event_time) <= $t",
    ]
    what: list[str] = []
    if isinstance(feature, AggregateFeature):
        types = feature.event_type
        pred = feature.predicate
        window = _window_of(feature)
        if window is not None:
            start = window.start(t_us)
            conds.append(f"epoch_us(event_time) >= {start}")
            what.append(f"window {feature.window} (bucket {feature.canonical()['bucket']})")
        else:
            what.append("lifetime")
        agg = feature.aggregate + (f"({feature.field})" if feature.field else "")
        field = feature.field
    else:
        assert isinstance(feature, SessionFeature)
        types = (
            feature.event_type if feature.aggregate in ("count", "count_before") else feature.session_events
        )
        if feature.aggregate == "count_before" and types is not None and feature.before:
            types = [*types, *feature.before]
        pred = feature.predicate if feature.aggregate != "sessions" else None
        span = feature.window.seconds if feature.window is not None else feature.lookback.seconds
        conds.append(f"epoch_us(event_time) > $t - {span * US}")
        what.append(
            f"session gap {feature.gap}, {'window ' + str(feature.window) if feature.window else 'lookback ' + str(feature.lookback)}"
        )
        agg = f"session {feature.aggregate}"
        field = None
    if types is not None:
        conds.append("event_type IN (" + ", ".join("'" + t.replace("'", "''") + "'" for t in types) + ")")
        what.append("types " + ", ".join(types))
    zone = feature.zone
    if pred is not None:
        conds.append(pred.sql(lambda f: _column_sql(f, zone)))
        what.append(f"where {pred.text()}")
    value_col = f", {_column_sql(field, zone)} AS value" if field else ""
    where = " AND ".join(conds)
    params_d = {"cid": customer_id, "t": t_us}
    (total,) = con.execute(f"SELECT count(*) FROM {events_table} WHERE {where}", params_d).fetchall()[0]
    rows = con.execute(
        f"SELECT event_time, available_at, event_type{value_col}, event_id FROM {events_table} "
        f"WHERE {where} ORDER BY event_time DESC, available_at DESC, event_id DESC LIMIT {int(limit)}",
        params_d,
    ).fetchall()
    columns = ("event_time", "available_at", "event_type", *(("value",) if field else ()), "event_id")
    return Explanation(
        feature.name,
        feature.kind,
        f"{agg} over {'; '.join(what)}",
        columns,
        tuple(tuple(r) for r in rows),
        int(total),
    )


# ------------------------------------------------------------------------------------------------- describe


@dataclass(frozen=True)
class FeatureStats:
    """Summary of one feature over a sample spine."""

    name: str
    kind: str
    type: str
    null_rate: float
    mean: float | None
    min: Any
    max: Any


def describe_features(
    con: duckdb.DuckDBPyConnection,
    features: Sequence[AnyFeature] | FeaturePlan,
    *,
    as_of: datetime | None = None,
    sample: int = 1000,
    seed: int = 0,
) -> tuple[pa.Table, list[FeatureStats]]:
    """Compute every feature for a sample of customers as of one time; summarise each column.

    The sample spine is up to ``sample`` customers drawn (reproducibly, by a hash of the id and ``seed``)
    from the customers with events, each as of ``as_of`` (default: the log's latest ``available_at``).
    Returns the computed table and per-feature null rate, mean (numbers and booleans), min and max.
    """
    plan = _plan(features)
    if as_of is None:
        (latest,) = con.execute("SELECT max(available_at) FROM events").fetchall()[0]
        if latest is None:
            raise ValueError("the event log is empty; ingest events first")
        as_of = latest
    rows = con.execute(
        "SELECT customer_id FROM (SELECT DISTINCT customer_id FROM events) "
        f"ORDER BY {sample_key_sql('customer_id', f'features-sample-{int(seed)}')}, customer_id LIMIT ?",
        [int(sample)],
    ).fetchall()
    ids = [r[0] for r in rows]
    spine = pa.table(
        {
            "customer_id": pa.array(ids, pa.string()),
            "as_of": pa.array([as_of] * len(ids), pa.timestamp("us", tz="UTC")),
        }
    )
    table = compute_features(con, plan, spine)
    stats: list[FeatureStats] = []
    for f, name, typ in zip(plan.features, plan.names, plan.types, strict=True):
        col = table.column(name)
        n = max(col.length(), 1)
        null_rate = col.null_count / n
        mean: float | None = None
        lo: Any = None
        hi: Any = None
        if col.length() > col.null_count:
            if pa.types.is_boolean(typ):
                mean = pc.mean(col.cast(pa.float64())).as_py()
            elif not pa.types.is_string(typ):
                mean = pc.mean(col).as_py()
            mm = pc.min_max(col).as_py()
            lo, hi = mm["min"], mm["max"]
        stats.append(FeatureStats(name, f.kind, str(typ), null_rate, mean, lo, hi))
    return table, stats


def describe_definition(feature: AnyFeature) -> str:
    """A one-line reading of a definition, e.g. ``count purchase over 7d (bucket 1h) where amount > 0``."""
    if isinstance(feature, DerivedFeature):
        return " ".join(feature.expr.split())
    if isinstance(feature, AttributeFeature):
        src = f" from {feature.source}" if feature.source else ""
        return f"attribute {feature.attribute}{src} ({feature.type})"
    if isinstance(feature, TriggerFeature):
        return f"trigger {feature.field} ({feature.value_type})"
    parts: list[str] = []
    if isinstance(feature, AggregateFeature):
        parts.append(feature.aggregate + (f"({feature.field})" if feature.field else ""))
    else:
        parts.append(f"session {feature.aggregate}")
    if feature.event_type:
        parts.append(", ".join(feature.event_type))
    if isinstance(feature, AggregateFeature):
        bucket = feature.canonical()["bucket"]
        parts.append(f"over {feature.window}" + (f" (bucket {bucket})" if bucket else ""))
    else:
        if feature.before:
            parts.append("before " + ", ".join(feature.before))
        if feature.window is not None:
            parts.append(f"over {feature.window}")
        parts.append(f"gap {feature.gap}")
        if feature.session_events:
            parts.append("of " + ", ".join(feature.session_events))
    pred = feature.predicate
    if pred is not None:
        parts.append(f"where {pred.text()}")
    return " ".join(parts)
