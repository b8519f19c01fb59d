"""The Parquet event store: commits by manifest, the same rows as the DuckDB log, read by Spark as well."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tests.conftest import canonical_events, write_spec
from typer.testing import CliRunner

from propensity.cli.app import app
from propensity.events.ingest import ingest_attributes, ingest_table
from propensity.events.log import DuckDBEventLog, open_event_log
from propensity.events.parquet_log import EVENT_SCHEMA, ParquetEventLog
from propensity.workspace import Workspace

# These tests choose their storage themselves.
pytestmark = pytest.mark.parametrize("event_storage", ["duckdb"], indirect=True)

PARQUET_SPEC = """
storage: {events: parquet, path: lake/events}
attributes:
  - {name: crm, path: crm.csv}
"""


def parquet_workspace(root: Path) -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    (root / "crm.csv").write_text("customer_id,plan\nc1,pro\nc2,free\n", encoding="utf-8")
    return write_spec(root, PARQUET_SPEC)


def test_a_commit_is_a_manifest_and_files_without_one_are_never_read(tmp_path: Path) -> None:
    ws = parquet_workspace(tmp_path)
    log = open_event_log(ws)
    assert isinstance(log, ParquetEventLog) and log.count() == 0
    report = ingest_table(ws, canonical_events(300, customers=7))
    assert report.accepted == 300 and log.count() == 300
    m = log.manifest()
    assert m.version == 1 and all(f["path"].startswith("events/event_date=") for f in m.tables["events"])
    assert len({f["date"] for f in m.tables["events"]}) == len(m.tables["events"])  # one file per event date
    # A writer that died after writing a data file but before its manifest: the file is not part of the log.
    stray = tmp_path / "lake" / "events" / "event_date=2024-03-01" / "crashed-writer.parquet"
    stray.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(_canonical(5), stray)
    assert log.count() == 300 and log.read().num_rows == 300
    # Re-ingesting the same rows changes nothing (dedupe against the committed files).
    again = ingest_table(ws, canonical_events(300, customers=7))
    assert (again.accepted, again.duplicates) == (0, 300) and log.manifest().version == 1


def _canonical(n: int) -> pa.Table:
    from datetime import UTC, datetime

    t = pa.array([datetime(2024, 3, 1, tzinfo=UTC)] * n, pa.timestamp("us", tz="UTC"))
    cols: dict[str, Any] = {f.name: pa.nulls(n, f.type) for f in EVENT_SCHEMA}
    cols.update(event_id=pa.array([f"x{i}" for i in range(n)]), customer_id=pa.array(["c1"] * n),
                event_type=pa.array(["purchase"] * n), event_time=t, available_at=t, ingested_at=t)  # fmt: skip
    return pa.table(cols)


def test_the_parquet_log_reads_as_the_duckdb_log(tmp_path: Path) -> None:
    events = canonical_events(500, customers=11, seed=3)
    duck = Workspace.open(tmp_path / "d")
    ingest_table(duck, events)
    lake = parquet_workspace(tmp_path / "p")
    ingest_table(lake, events.slice(0, 200))
    ingest_table(lake, events.slice(150, 350))  # overlaps: 50 duplicates
    a = DuckDBEventLog(duck.db_path).read().drop_columns(["ingested_at"])
    b = open_event_log(lake).read().drop_columns(["ingested_at"])
    assert a.num_rows == b.num_rows == 500 and a.equals(b.cast(a.schema))
    some = open_event_log(lake).read(
        customer_ids=["c3"], available_before=events.column("event_time")[100].as_py()
    )
    assert set(some.column("customer_id").to_pylist()) == {"c3"} and some.num_rows > 0


def test_reloading_an_attribute_source_replaces_its_rows(tmp_path: Path) -> None:
    ws = parquet_workspace(tmp_path)
    source = ws.spec.attributes[0]
    assert ingest_attributes(ws, source) == 2
    (tmp_path / "crm.csv").write_text("customer_id,plan\nc1,team\n", encoding="utf-8")
    assert ingest_attributes(ws, source) == 1
    with open_event_log(ws).connection(read_only=True) as con:
        assert con.execute("SELECT customer_id, value FROM attributes").fetchall() == [("c1", "team")]
    assert open_event_log(ws).manifest().rows("attributes") == 1


def test_export_moves_a_duckdb_workspace_to_parquet(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path)
    ingest_table(ws, canonical_events(400, customers=9))
    result = CliRunner().invoke(app, ["events", "export", "--to", "parquet", "-w", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["rows"]["events"] == 400 and out["version"] == 1
    lake = ParquetEventLog(out["path"], ws.db_path)
    assert (
        lake.read()
        .drop_columns(["ingested_at"])
        .equals(
            DuckDBEventLog(ws.db_path)
            .read()
            .drop_columns(["ingested_at"])
            .cast(lake.read().drop_columns(["ingested_at"]).schema)
        )
    )
    again = CliRunner().invoke(app, ["events", "export", "--to", "parquet", "-w", str(tmp_path)])
    assert again.exit_code == 1 and "already holds" in again.output


@pytest.mark.slow
def test_spark_reads_the_same_files(tmp_path: Path, spark: Any) -> None:
    ws = parquet_workspace(tmp_path)
    ingest_table(ws, canonical_events(250, customers=5))
    ingest_attributes(ws, ws.spec.attributes[0])
    log = open_event_log(ws)
    assert isinstance(log, ParquetEventLog)
    events, attributes = log.spark_frames(spark)
    got = events.toArrow().sort_by(
        [("customer_id", "ascending"), ("event_time", "ascending"), ("event_id", "ascending")]
    )
    want = log.read()
    assert got.num_rows == 250 and attributes.count() == 2
    assert got.column("event_id").to_pylist() == want.column("event_id").to_pylist()
    assert got.column("event_time").cast(pa.int64()).equals(want.column("event_time").cast(pa.int64()))
