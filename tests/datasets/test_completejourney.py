"""The Complete Journey export: real counts, dates, schema and the mapping decisions of docs/completejourney.md."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from propensity.config.spec import load_spec
from propensity.core.event import EVENT_SCHEMA, LOG_FIELDS, STANDARD_EVENT_TYPES
from propensity.datasets.completejourney import (
    CANONICAL_EVENT_SCHEMA,
    EXTRA_COLUMNS,
    HOUSEHOLDS_SCHEMA,
    CompleteJourneySummary,
    completejourney_data_dir,
)

SOURCE_ROWS = {
    "transactions": 1_469_307,
    "products": 92_331,
    "campaigns": 6_589,
    "campaign_descriptions": 27,
    "coupons": 116_204,
    "coupon_redemptions": 2_102,
    "demographics": 801,
}
EVENTS = {"purchase": 1_469_307, "campaign_sent": 6_589, "coupon_redemption": 2_102}
FILES = {"transactions": "purchase", "campaigns": "campaign_sent", "coupon_redemptions": "coupon_redemption"}
FIRST = datetime(2016, 11, 14, 5, 0, tzinfo=UTC)  # campaign 24 starts 2016-11-14 00:00 New York time
LAST = datetime(2018, 1, 1, 4, 1, 20, tzinfo=UTC)  # last basket: 2017-12-31 23:01:20 New York time


@pytest.fixture(scope="module")
def export(
    cj_export: tuple[CompleteJourneySummary, Path, list[str]],
) -> tuple[CompleteJourneySummary, Path, list[str]]:
    return cj_export  # the session's one export (tests/conftest.py)


@pytest.fixture(scope="module")
def con(export: tuple[CompleteJourneySummary, Path, list[str]]) -> Iterator[duckdb.DuckDBPyConnection]:
    _, out, _ = export
    c = duckdb.connect()
    c.execute("SET TimeZone = 'UTC'")
    for name in FILES:
        c.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{out / 'events' / name}.parquet')")
    c.execute(f"CREATE VIEW households AS SELECT * FROM read_parquet('{out / 'households.parquet'}')")
    src = completejourney_data_dir()
    for name in SOURCE_ROWS:
        c.execute(f"CREATE VIEW src_{name} AS SELECT * FROM read_parquet('{src / name}.parquet')")
    yield c
    c.close()


def one(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[object, ...]:
    rows = con.sql(sql).fetchall()
    assert len(rows) == 1
    return tuple(rows[0])


def test_summary_has_the_real_counts_and_dates(
    export: tuple[CompleteJourneySummary, Path, list[str]],
) -> None:
    summary, out, messages = export
    assert dict(summary.tables_read) == SOURCE_ROWS
    assert dict(summary.events_written) == EVENTS
    assert summary.households == 2_469
    assert summary.households_with_demographics == 801
    assert summary.first_event_time == FIRST
    assert summary.last_event_time == LAST
    assert set(summary.paths) == {*FILES, "households", "summary"}
    assert all(Path(p).exists() for p in summary.paths.values())
    assert json.loads((out / "summary.json").read_text()) == summary.to_json()
    assert summary.seconds < 60
    assert any("1,469,307" in m for m in messages)


def test_source_date_ranges(con: duckdb.DuckDBPyConnection) -> None:
    assert one(
        con, "SELECT min(transaction_timestamp), max(transaction_timestamp) FROM src_transactions"
    ) == (
        datetime(2017, 1, 1, 11, 53, 26),
        datetime(2018, 1, 1, 4, 1, 20),
    )
    assert one(con, "SELECT min(week), max(week), count(DISTINCT household_id) FROM src_transactions") == (
        1,
        53,
        2469,
    )
    assert one(
        con,
        "SELECT min(start_date), max(start_date), min(end_date), max(end_date) FROM src_campaign_descriptions",
    ) == (datetime(2016, 11, 14), datetime(2017, 12, 28), datetime(2017, 1, 16), datetime(2018, 2, 28))
    assert one(con, "SELECT min(redemption_date), max(redemption_date) FROM src_coupon_redemptions") == (
        datetime(2017, 1, 1),
        datetime(2017, 12, 31),
    )


def test_naive_transaction_times_are_utc_instants_of_new_york_days(con: duckdb.DuckDBPyConnection) -> None:
    # The source's week number (weeks run Monday-Sunday from 2017-01-02) matches the New York calendar date of
    # every line when the naive timestamp is read as UTC, and no other reading we tried.
    def mismatches(zone: str) -> object:
        return one(
            con,
            f"""SELECT count(*) FILTER (WHERE week != CASE WHEN d < DATE '2017-01-02' THEN 1
                                        ELSE date_diff('day', DATE '2017-01-02', d) // 7 + 2 END)
                FROM (SELECT week, CAST(timezone('{zone}', event_time) AS DATE) AS d FROM transactions)""",
        )[0]

    assert mismatches("America/New_York") == 0
    assert mismatches("America/Chicago") == 1_194
    assert mismatches("UTC") == 34_729


def test_files_have_exactly_the_canonical_columns_then_the_extras(
    export: tuple[CompleteJourneySummary, Path, list[str]],
) -> None:
    _, out, _ = export
    canonical = [f for f in EVENT_SCHEMA if f.name not in LOG_FIELDS]
    assert list(CANONICAL_EVENT_SCHEMA) == canonical
    for name in FILES:
        schema = pq.read_schema(out / "events" / f"{name}.parquet")
        assert schema.names[: len(canonical)] == [f.name for f in canonical]
        for field in canonical:
            assert schema.field(field.name).type == field.type, (name, field.name)
        assert schema.names[len(canonical) :] == EXTRA_COLUMNS[name].names
        for field in EXTRA_COLUMNS[name]:
            assert (
                pa.types.is_string(field.type)
                or pa.types.is_integer(field.type)
                or pa.types.is_floating(field.type)
            )
    assert pq.read_schema(out / "households.parquet").remove_metadata() == HOUSEHOLDS_SCHEMA


def test_event_ids_unique_types_standard_and_times_canonical(con: duckdb.DuckDBPyConnection) -> None:
    union = " UNION ALL ".join(
        f"SELECT event_id, customer_id, event_type, event_time, available_at FROM {n}" for n in FILES
    )
    total, ids, nulls, not_available = one(
        con,
        f"""SELECT count(*), count(DISTINCT event_id),
                   count(*) FILTER (WHERE event_id IS NULL OR customer_id IS NULL OR event_time IS NULL),
                   count(*) FILTER (WHERE available_at != event_time)
            FROM ({union})""",
    )
    assert total == ids == sum(EVENTS.values())
    assert nulls == 0 and not_available == 0
    for name, event_type in FILES.items():
        assert con.sql(f"SELECT DISTINCT event_type FROM {name}").fetchall() == [(event_type,)]
        assert event_type in STANDARD_EVENT_TYPES
    assert one(
        con, f"SELECT min(event_time), max(event_time), count(DISTINCT customer_id) FROM ({union})"
    ) == (
        FIRST,
        LAST,
        2469,
    )


def test_purchases(con: duckdb.DuckDBPyConnection) -> None:
    row = one(
        con,
        """SELECT count(*), count(*) FILTER (WHERE amount IS NULL OR amount < 0), count(*) FILTER (WHERE amount = 0),
                  count(*) FILTER (WHERE quantity = 0), round(sum(amount), 2), count(DISTINCT basket_id),
                  count(*) FILTER (WHERE category IS NULL), count(*) FILTER (WHERE department IS NULL),
                  count(*) FILTER (WHERE currency != 'USD' OR sku IS NULL OR campaign_id IS NOT NULL),
                  min(event_time), max(event_time)
           FROM transactions""",
    )
    assert row == (
        1_469_307,
        0,  # no negative sales in this release: no refunds to emit
        11_226,
        8_869,
        4_596_039.58,
        155_848,
        7_045,  # 4,836 lines whose product is not in products + 2,209 products without a category
        4_836,
        0,
        datetime(2017, 1, 1, 11, 53, 26, tzinfo=UTC),
        LAST,
    )
    # event_id is tx-<basket_id>-<product_id>
    assert one(
        con, "SELECT count(*) FROM transactions WHERE event_id != 'tx-' || basket_id || '-' || sku"
    ) == (0,)


def test_campaign_sent_at_new_york_midnight_of_start_date(con: duckdb.DuckDBPyConnection) -> None:
    row = one(
        con,
        """SELECT count(*), count(DISTINCT customer_id), count(DISTINCT campaign_id),
                  count(*) FILTER (WHERE event_time != timezone('America/New_York',
                                                                CAST(CAST(campaign_start_date AS DATE) AS TIMESTAMP))),
                  count(*) FILTER (WHERE CAST(timezone('America/New_York', event_time) AS DATE)
                                   NOT BETWEEN CAST(campaign_start_date AS DATE) AND CAST(campaign_end_date AS DATE)),
                  count(*) FILTER (WHERE amount IS NOT NULL OR sku IS NOT NULL),
                  min(event_time), max(event_time)
           FROM campaigns""",
    )
    assert row == (6_589, 1_559, 27, 0, 0, 0, FIRST, datetime(2017, 12, 28, 5, 0, tzinfo=UTC))
    assert con.sql("SELECT campaign_type, count(*) FROM campaigns GROUP BY 1 ORDER BY 1").fetchall() == [
        ("Type A", 3_647),
        ("Type B", 2_368),
        ("Type C", 574),
    ]
    # Summer start dates are 04:00 UTC (EDT), winter ones 05:00 UTC (EST).
    assert one(con, "SELECT event_time FROM campaigns WHERE campaign_id = '1' LIMIT 1") == (
        datetime(2017, 3, 3, 5, 0, tzinfo=UTC),
    )
    assert one(con, "SELECT event_time FROM campaigns WHERE campaign_id = '3' LIMIT 1") == (
        datetime(2017, 3, 13, 4, 0, tzinfo=UTC),
    )


def test_a_sends_coupon_history_counts_only_purchases_before_the_send(con: duckdb.DuckDBPyConnection) -> None:
    # Recomputed from the exported purchases by time: lines of a product the campaign's coupons cover, bought
    # before the send (00:00 New York on the start date), and those from the 90 New York days before it.
    got = con.sql(
        """WITH cp AS (SELECT DISTINCT CAST(campaign_id AS VARCHAR) AS campaign_id,
                                       CAST(product_id AS VARCHAR) AS sku FROM src_coupons),
           mine AS (
               SELECT c.event_id, count(t.sku) AS lines_before,
                      count(t.sku) FILTER (WHERE t.event_time >= timezone('America/New_York',
                          CAST(CAST(c.campaign_start_date AS DATE) - 90 AS TIMESTAMP))) AS lines_90d,
                      count(DISTINCT t.sku) FILTER (WHERE t.event_time >= timezone('America/New_York',
                          CAST(CAST(c.campaign_start_date AS DATE) - 90 AS TIMESTAMP))) AS products_90d
               FROM campaigns c
               LEFT JOIN (SELECT t.* FROM transactions t) t
                 ON t.customer_id = c.customer_id AND t.event_time < c.event_time
                AND EXISTS (SELECT 1 FROM cp WHERE cp.campaign_id = c.campaign_id AND cp.sku = t.sku)
               GROUP BY 1)
           SELECT count(*),
                  count(*) FILTER (WHERE c.coupon_lines_bought_before != m.lines_before
                                      OR c.coupon_lines_bought_90d != m.lines_90d
                                      OR c.coupon_products_bought_90d != m.products_90d),
                  count(*) FILTER (WHERE c.coupon_lines_bought_90d > 0),
                  min(c.coupon_products_bought_90d <= c.coupon_lines_bought_90d
                      AND c.coupon_lines_bought_90d <= c.coupon_lines_bought_before)
           FROM campaigns c JOIN mine m USING (event_id)"""
    ).fetchall()[0]
    assert got[:2] == (6_589, 0) and got[2] > 3_000 and got[3] is True


def test_coupon_redemptions_follow_a_received_campaign(con: duckdb.DuckDBPyConnection) -> None:
    row = one(
        con,
        """SELECT count(*), count(DISTINCT r.customer_id), count(DISTINCT (r.customer_id, r.campaign_id)),
                  count(*) FILTER (WHERE c.event_id IS NULL),
                  count(*) FILTER (WHERE r.event_time < c.event_time),
                  count(*) FILTER (WHERE CAST(timezone('America/New_York', r.event_time) AS DATE)
                                   != CAST(r.redemption_date AS DATE)),
                  count(*) FILTER (WHERE CAST(r.redemption_date AS DATE)
                                   NOT BETWEEN CAST(r.campaign_start_date AS DATE)
                                           AND CAST(r.campaign_end_date AS DATE)),
                  min(r.event_time), max(r.event_time)
           FROM coupon_redemptions r LEFT JOIN campaigns c USING (customer_id, campaign_id)""",
    )
    assert row == (
        2_102,
        410,
        792,
        0,  # every redemption is of a campaign the household received
        0,
        0,
        0,
        datetime(2017, 1, 1, 16, 58, 48, tzinfo=UTC),
        datetime(2017, 12, 31, 22, 3, 34, tzinfo=UTC),
    )
    assert con.sql(
        "SELECT time_basis, count(*) FROM coupon_redemptions GROUP BY 1 ORDER BY 1"
    ).fetchall() == [
        ("coupon_line", 1_130),
        ("coupon_product", 709),
        ("same_day_basket", 263),
    ]
    # The chosen basket is a real basket of that household, and the event carries its time.
    assert one(
        con,
        """SELECT count(*) FROM coupon_redemptions r
           WHERE NOT EXISTS (SELECT 1 FROM transactions t WHERE t.basket_id = r.basket_id
                             AND t.customer_id = r.customer_id AND t.event_time = r.event_time)""",
    ) == (0,)


def test_households_are_a_snapshot_valid_from_the_first_event(con: duckdb.DuckDBPyConnection) -> None:
    row = one(
        con,
        """SELECT count(*), count(DISTINCT customer_id), min(valid_from), max(valid_from),
                  count(*) FILTER (WHERE home_ownership IS NULL), count(*) FILTER (WHERE marital_status IS NULL),
                  count(*) FILTER (WHERE customer_id NOT IN (SELECT customer_id FROM transactions))
           FROM households""",
    )
    assert row == (801, 801, FIRST, FIRST, 233, 137, 0)


def test_example_spec_loads_and_points_at_the_export() -> None:
    import propensity.datasets.completejourney as module

    path = Path(module.__file__).parent / "projects" / "completejourney.yaml"
    spec = load_spec(path)
    assert [s.name for s in spec.sources] == list(FILES)
    assert [s.path for s in spec.sources] == [f"data/completejourney/events/{n}.parquet" for n in FILES]
    assert all(s.format == "parquet" and s.timezone == "UTC" and not s.columns for s in spec.sources)
    (attrs,) = spec.attributes
    assert attrs.path == "data/completejourney/households.parquet"
    assert attrs.valid_from == "valid_from"
    assert attrs.attributes == list(HOUSEHOLDS_SCHEMA.names[2:])
    assert {a.template for a in spec.actions} >= {"buy", "churn", "respond"}


def test_households_parquet_values_are_strings(
    export: tuple[CompleteJourneySummary, Path, list[str]],
) -> None:
    _, out, _ = export
    table = pq.read_table(out / "households.parquet")
    assert table.num_rows == 801
    assert pc.all(
        pc.equal(table.column("valid_from"), pa.scalar(FIRST, type=table.schema.field("valid_from").type))
    ).as_py()
    assert sorted(table.column("age").unique().to_pylist()) == [
        "19-24",
        "25-34",
        "35-44",
        "45-54",
        "55-64",
        "65+",
    ]
