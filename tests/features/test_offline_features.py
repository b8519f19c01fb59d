"""The offline engine's table contract: spine order and columns kept, types, one generated query."""

from __future__ import annotations

from datetime import datetime

import duckdb
import pyarrow as pa
import pytest
from feature_helpers import at, insert_events, new_log

from propensity.core.event import UTC_TS
from propensity.features import compute_features, feature_query, parse_features

FEATURES = parse_features(
    [
        {"name": "views_7d", "aggregate": "count", "event_type": "page_view", "window": "7d"},
        {"name": "spend_7d", "aggregate": "sum", "field": "amount", "window": "7d"},
        {"name": "last_sku", "aggregate": "last", "field": "sku", "window": "lifetime"},
        {"name": "session_views", "kind": "session", "aggregate": "count", "event_type": "page_view"},
        {"name": "rate", "kind": "derived", "expr": "spend_7d / views_7d"},
    ]
)


def _log() -> duckdb.DuckDBPyConnection:
    con = new_log()
    insert_events(
        con,
        [
            {
                "event_id": f"e{i}",
                "customer_id": f"c{i % 3}",
                "event_type": "page_view",
                "event_time": at(hours=-i),
                "available_at": at(hours=-i),
                "amount": float(i),
                "sku": f"s{i}",
            }
            for i in range(12)
        ],
    )
    return con


def test_spine_order_and_extra_columns_are_kept() -> None:
    spine = pa.table(
        {
            "row": [3, 1, 2, 0],
            "customer_id": ["c2", "c0", "nobody", "c0"],
            "as_of": pa.array([at(), at(), at(), at(hours=-5)], UTC_TS),
            "label": [True, False, True, False],
        }
    )
    out = compute_features(_log(), FEATURES, spine)
    assert out.column_names == ["row", "customer_id", "as_of", "label", *(f.name for f in FEATURES)]
    assert out.column("row").to_pylist() == [3, 1, 2, 0]
    assert out.schema.field("views_7d").type == pa.int64()
    assert out.schema.field("last_sku").type == pa.string()
    assert out.schema.field("as_of").type == UTC_TS
    rows = out.to_pylist()
    assert rows[0]["views_7d"] == 4 and rows[0]["last_sku"] == "s2"  # c2: hours 2, 5, 8, 11
    assert {k: rows[2][k] for k in ("views_7d", "spend_7d", "last_sku", "session_views", "rate")} == {
        "views_7d": 0,
        "spend_7d": 0.0,
        "last_sku": None,
        "session_views": 0,
        "rate": None,
    }
    # c0 as of -5h sees its events at -6h and -9h; the last one is an hour old, so no current session.
    assert rows[3]["views_7d"] == 2 and rows[3]["rate"] == 7.5 and rows[3]["session_views"] == 0


def test_naive_as_of_is_read_as_utc() -> None:
    naive = pa.table({"customer_id": ["c0"], "as_of": pa.array([datetime(2024, 1, 10)], pa.timestamp("us"))})
    aware = pa.table({"customer_id": ["c0"], "as_of": pa.array([at()], UTC_TS)})
    con = _log()
    assert (
        compute_features(con, FEATURES, naive).to_pylist()
        == compute_features(con, FEATURES, aware).to_pylist()
    )


def test_bad_spines_are_refused() -> None:
    con = _log()
    with pytest.raises(ValueError, match="missing: as_of"):
        compute_features(con, FEATURES, pa.table({"customer_id": ["c0"]}))
    clash = pa.table({"customer_id": ["c0"], "as_of": pa.array([at()], UTC_TS), "views_7d": [1]})
    with pytest.raises(ValueError, match="clash"):
        compute_features(con, FEATURES, clash)


def test_no_features_returns_the_spine() -> None:
    spine = pa.table({"customer_id": ["c0"], "as_of": pa.array([at()], UTC_TS)})
    assert compute_features(_log(), [], spine).column_names == ["customer_id", "as_of"]


def test_one_query_with_one_range_join_per_window_class() -> None:
    sql = feature_query(FEATURES, "spine")
    assert sql.count("JOIN _e e") == 3  # finite-window aggregates, lifetime aggregates, the session group
    assert "FILTER (WHERE" in sql


def test_chunked_spines_give_the_same_table() -> None:
    spine = pa.table(
        {
            "customer_id": [f"c{i % 4}" for i in range(11)],
            "as_of": pa.array([at(hours=-i) for i in range(11)], UTC_TS),
        }
    )
    con = _log()
    assert compute_features(con, FEATURES, spine, chunk_rows=3).equals(compute_features(con, FEATURES, spine))
