"""Spark equals DuckDB: the same feature plan compiled to Spark SQL gives the same values (integers exactly,
floats within 1e-9) on random logs with late, duplicated, future-dated, tied and out-of-order events."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from feature_helpers import T0_US, insert_attributes, insert_events, new_log, same, spine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_feature_parity import FEATURES, streams

from propensity.features import compute_features, parse_features
from propensity.features.spark import compute_features_spark, feature_query_spark

H = 3600 * 1_000_000
D = 24 * H

pytestmark = pytest.mark.slow


def frames(spark: Any, con: Any) -> tuple[Any, Any]:
    """The DuckDB log's tables as Spark DataFrames (the same rows, the same Arrow types)."""
    events = con.sql(
        "SELECT * REPLACE (CAST(properties AS VARCHAR) AS properties) FROM events"
    ).to_arrow_table()
    attributes = con.sql("SELECT * FROM attributes").to_arrow_table()
    return spark.createDataFrame(events), spark.createDataFrame(attributes)


def assert_same(names: list[str], duck: pa.Table, other: pa.Table) -> None:
    assert duck.schema == other.schema
    for r, (a, b) in enumerate(zip(duck.to_pylist(), other.to_pylist(), strict=True)):
        for name in names:
            assert same(a[name], b[name]), f"row {r} {name}: duckdb {a[name]!r}, spark {b[name]!r}"


def test_the_spark_query_is_the_plan_in_spark_spelling() -> None:
    sql = feature_query_spark(FEATURES)
    assert "unix_micros(" in sql and "max_by(" in sql and "epoch_us" not in sql and "arg_max" not in sql
    assert "`ratio_plus`" in sql and "ORDER BY s._rid" not in sql


@settings(
    max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(batch=st.lists(streams(), min_size=15, max_size=15), data=st.data())
def test_spark_equals_duckdb_on_random_logs(spark: Any, batch: list[Any], data: st.DataObject) -> None:
    # Fifteen random logs per example, each with its own customers, in one query per engine (a Spark job costs
    # far more to start than to run on a few hundred events).
    events: list[dict[str, Any]] = []
    attrs: list[dict[str, Any]] = []
    queries: list[tuple[str, int]] = []
    for k, (_, evs, ats) in enumerate(batch):
        events += [
            {**e, "event_id": f"{k}-{e['event_id']}", "customer_id": f"{k}-{e['customer_id']}"} for e in evs
        ]
        attrs += [{**a, "customer_id": f"{k}-{a['customer_id']}"} for a in ats]
        for _ in range(data.draw(st.integers(1, 6))):
            customer = f"{k}-" + data.draw(st.sampled_from(["c0", "c1", "c2", "c9"]))
            edge = (
                data.draw(st.sampled_from(evs))["event_time"]
                + data.draw(st.sampled_from([0, 15 * 60 * 10**6, H, D, 7 * D, 2 * H]))
                + data.draw(st.sampled_from([-1, 0, 1]))
            )
            t = data.draw(st.one_of(st.integers(T0_US - 6 * D, T0_US + 3 * D), st.just(edge)))
            queries.append((customer, t))
    con = new_log()
    insert_events(con, events)
    insert_attributes(con, attrs)
    sp = spine(queries)
    duck = compute_features(con, FEATURES, sp)
    ev, at = frames(spark, con)
    other = compute_features_spark(spark, FEATURES, sp, events=ev, attributes=at)
    assert_same([f.name for f in FEATURES], duck, other)


def test_spine_order_extra_columns_and_unknown_customers(spark: Any) -> None:
    feats = parse_features([{"name": "n_7d", "aggregate": "count", "window": "7d"}])
    con = new_log()
    insert_events(con, [{"event_id": "e1", "customer_id": "c1", "event_type": "page_view",
                         "event_time": T0_US - H, "available_at": T0_US - H}])  # fmt: skip
    sp = spine([("c1", T0_US), ("nobody", T0_US), ("c1", T0_US - 2 * H)]).append_column(
        "label", pa.array([1, 0, 1], pa.int8())
    )
    ev, at = frames(spark, con)
    out = compute_features_spark(spark, feats, sp, events=ev, attributes=at)
    assert out.column_names == ["customer_id", "as_of", "label", "n_7d"]
    assert out.column("n_7d").to_pylist() == [1, 0, 0]
    assert out.equals(compute_features(con, feats, sp))
