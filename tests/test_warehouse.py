"""Warehouse sources: events and a labelled table read from a real PostgreSQL server (started by the tests) by
a declared query, incrementally by a watermark column, with the URL only in the environment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from propensity.cli.app import app
from propensity.config.warehouse import SqlQuery
from propensity.events.log import open_event_log
from propensity.events.warehouse import WarehouseError, last_watermark, read_query
from propensity.workspace import Workspace

RUNNER = CliRunner()
SPEC = """project: shop
sources:
  - name: orders
    sql:
      url_env: SHOP_PG_URL
      query: SELECT order_id, customer, kind, at, amount, updated_at FROM shop_events WHERE kind <> 'ignored'
      watermark: updated_at
    columns: {event_id: order_id, customer_id: customer, event_type: kind, event_time: at}
attributes:
  - name: crm
    sql: {url_env: SHOP_PG_URL, query: "SELECT customer, plan FROM customer_attrs"}
    customer_id: customer
tables:
  - name: churn
    sql: {url_env: SHOP_PG_URL, query: "SELECT id, tenure, plan, churned FROM customers_labelled"}
    id: id
    label: churned
training: {min_positives: 20, min_negatives: 20}
"""


@pytest.fixture
def pg(postgres_server, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    import psycopg

    url = postgres_server.url
    monkeypatch.setenv("SHOP_PG_URL", url)
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("DROP TABLE IF EXISTS shop_events, customers_labelled, customer_attrs")
        con.execute("CREATE TABLE customer_attrs (customer text, plan text)")
        con.execute("INSERT INTO customer_attrs VALUES ('c0', 'pro'), ('c1', 'basic')")
        con.execute("CREATE TABLE shop_events (order_id text, customer text, kind text, at timestamptz, "
                    "amount numeric(10, 2), updated_at timestamptz)")  # fmt: skip
        con.execute("CREATE TABLE customers_labelled (id bigint, tenure int, plan text, churned text)")
    return url


def _insert(url: str, rows: list[tuple[object, ...]]) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as con, con.cursor() as cur:
        cur.executemany("INSERT INTO shop_events VALUES (%s, %s, %s, %s, %s, %s)", rows)


@pytest.mark.service
def test_events_load_incrementally_by_watermark(pg: str, tmp_path: Path) -> None:
    (tmp_path / "propensity.yaml").write_text(SPEC)
    _insert(pg, [(f"o{i}", f"c{i % 3}", "purchase", f"2025-03-0{i + 1} 10:00+00", 10 + i, f"2025-03-0{i + 1} 11:00+00")
                 for i in range(5)] + [("x", "c1", "ignored", "2025-03-01 10:00+00", 1, "2025-03-01 11:00+00")])  # fmt: skip
    out = RUNNER.invoke(app, ["ingest", "-w", str(tmp_path)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert pg not in out.output and "127.0.0.1" not in out.output  # the URL is never printed
    ws = Workspace.open(tmp_path)
    with open_event_log(ws).connection() as con:
        got = con.execute("SELECT event_id, customer_id, amount FROM events ORDER BY event_id").fetchall()
    assert [g[0] for g in got] == ["o0", "o1", "o2", "o3", "o4"] and got[0][2] == pytest.approx(10.0)
    with open_event_log(ws).connection() as con:  # attribute sources from a query too
        attrs = con.execute(
            "SELECT customer_id, value FROM attributes WHERE attribute = 'plan' ORDER BY 1"
        ).fetchall()
    assert attrs == [("c0", "pro"), ("c1", "basic")]
    assert last_watermark(ws, "orders").startswith("2025-03-05T11:00:00")
    # two new rows, one at the boundary's watermark: both arrive; the re-read boundary row is a duplicate
    _insert(pg, [("o5", "c1", "purchase", "2025-03-05 12:00+00", 7, "2025-03-05 11:00+00"),
                 ("o6", "c2", "purchase", "2025-03-07 12:00+00", 8, "2025-03-07 11:00+00")])  # fmt: skip
    out = RUNNER.invoke(app, ["ingest", "-w", str(tmp_path)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    with open_event_log(ws).connection() as con:
        assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 7
    assert last_watermark(ws, "orders").startswith("2025-03-07T11:00:00")


@pytest.mark.service
def test_a_labelled_table_from_a_query_trains(pg: str, tmp_path: Path) -> None:
    import psycopg

    rng = np.random.default_rng(0)
    n = 600
    tenure = rng.integers(1, 60, size=n)
    plan = rng.choice(["basic", "pro"], size=n)
    churned = rng.random(n) < 1 / (1 + np.exp((tenure - 20) / 8))
    with psycopg.connect(pg, autocommit=True) as con, con.cursor() as cur:
        cur.executemany("INSERT INTO customers_labelled VALUES (%s, %s, %s, %s)",
                        [(i, int(t), str(p), "Yes" if c else "No") for i, (t, p, c) in enumerate(zip(tenure, plan, churned, strict=True))])  # fmt: skip
    (tmp_path / "propensity.yaml").write_text(SPEC)
    out = RUNNER.invoke(app, ["train", "--table", "churn", "--folds", "3", "--json", "-w", str(tmp_path)])
    assert out.exit_code == 0, out.output
    s = json.loads(out.output)
    assert s["rows_used"] == n and s["features"] == ["tenure", "plan"] and s["model"]["roc_auc"] > 0.7


def test_the_url_comes_only_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOWHERE_PG_URL", raising=False)
    q = SqlQuery(url_env="NOWHERE_PG_URL", query="SELECT 1")
    with pytest.raises(WarehouseError, match="NOWHERE_PG_URL is not set"):
        read_query(q, what="source x")
    monkeypatch.setenv("NOWHERE_PG_URL", "postgresql://me:s3cret@127.0.0.1:1/db")
    with pytest.raises(WarehouseError) as err:
        read_query(q, what="source x")
    assert "s3cret" not in str(err.value)
    with pytest.raises(ValueError, match="must be a SELECT"):
        SqlQuery(url_env="X", query="DROP TABLE t")
