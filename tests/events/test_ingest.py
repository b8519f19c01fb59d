"""Bulk ingest: formats, mapping, time semantics, idempotency and quarantine."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from tests.conftest import canonical_events, write_parquet, write_spec

from propensity.events.ingest import IngestError, ingest_files, ingest_table
from propensity.events.log import open_event_log
from propensity.workspace import Workspace


def rows(ws: Workspace, sql: str) -> list[tuple]:
    with open_event_log(ws).connection() as con:
        return con.execute(sql).fetchall()


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n", encoding="utf-8")
    return path


def test_parquet_ingest_then_reingest_changes_nothing(workspace: Workspace, tmp_path: Path) -> None:
    path = write_parquet(canonical_events(1000), tmp_path / "events.parquet")
    first = ingest_files(workspace, [path])
    assert (first.accepted, first.duplicates, first.quarantined) == (1000, 0, 0)
    before = rows(workspace, "SELECT * FROM events ORDER BY event_id")

    again = ingest_files(workspace, [path])
    assert again.files[0].skipped_unchanged
    forced = ingest_files(workspace, [path], force=True)
    assert (forced.accepted, forced.duplicates) == (0, 1000)
    assert rows(workspace, "SELECT * FROM events ORDER BY event_id") == before


def test_same_events_in_another_file_and_format_are_duplicates(workspace: Workspace, tmp_path: Path) -> None:
    table = canonical_events(200)
    ingest_files(workspace, [write_parquet(table, tmp_path / "a.parquet")])
    csv_path = tmp_path / "b.csv.gz"
    with gzip.open(csv_path, "wt", encoding="utf-8") as f:
        import pyarrow.csv as pacsv

        buf = pa.BufferOutputStream()
        pacsv.write_csv(table, buf)
        f.write(buf.getvalue().to_pybytes().decode())
    report = ingest_files(workspace, [csv_path])
    assert (report.accepted, report.duplicates, report.quarantined) == (0, 200, 0)


def test_rows_without_ids_get_stable_content_ids(workspace: Workspace, tmp_path: Path) -> None:
    text = """
customer_id,event_type,event_time,amount
c1,purchase,2024-01-01T10:00:00Z,10.5
c1,purchase,2024-01-01T10:00:00Z,10.5
c1,purchase,2024-01-01T10:00:00Z,11.0
c2,page_view,2024-01-01T10:00:00+01:00,
"""
    report = ingest_files(workspace, [write_csv(tmp_path / "a.csv", text)])
    assert (report.accepted, report.duplicates) == (3, 1)
    ids = [r[0] for r in rows(workspace, "SELECT event_id FROM events ORDER BY event_id")]
    # The same content written differently (JSONL, another file) gets the same ids.
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text(
        json.dumps(
            {
                "customer_id": "c1",
                "event_type": "purchase",
                "event_time": "2024-01-01T10:00:00Z",
                "amount": 10.5,
            }
        )
        + "\n",
        encoding="utf-8",
    )
    assert ingest_files(workspace, [jsonl]).duplicates == 1
    assert [r[0] for r in rows(workspace, "SELECT event_id FROM events ORDER BY event_id")] == ids


def test_quarantine_carries_file_row_number_and_reason(workspace: Workspace, tmp_path: Path) -> None:
    text = """
customer_id,event_type,event_time,amount,device
c1,purchase,2024-01-01T10:00:00Z,10.5,mobile
,purchase,2024-01-01T10:00:00Z,3,web
c3,clik,2024-01-01T10:00:00Z,3,web
c4,purchase,yesterday,3,web
c5,purchase,2024-01-01T10:00:00Z,-3,web
c6,purchase,2024-01-01T10:00:00Z,abc,web
c7,purchase,2024-01-01T10:00:00Z,3,web,extra-field
c8,purchase,2099-01-01T10:00:00Z,3,web
c9,refund,2024-01-01T10:00:00Z,-3,web
c10,purchase,2024-01-01T10:00:00Z,nan,web
"""
    path = write_csv(tmp_path / "bad.csv", text)
    report = ingest_files(workspace, [path])
    assert (report.rows_read, report.accepted, report.quarantined) == (10, 2, 8)
    got = {
        row: (reason, detail, raw)
        for row, reason, detail, raw, file in rows(
            workspace, "SELECT row_number, reason, detail, raw, source_file FROM quarantine"
        )
        if file == str(path)
    }
    assert got[2][0] == "customer_id: missing or empty"
    assert got[3][0] == "event_type: not a declared event type" and "'clik'" in got[3][1]
    assert got[4][0] == "event_time: not a timestamp" and "'yesterday'" in got[4][1]
    assert got[5][0] == "amount: negative" and "refund" in got[5][1]
    assert got[6][0] == "amount: not a number" and "'abc'" in got[6][1]
    assert got[7][0] == "malformed CSV record" and "extra-field" in got[7][2]
    assert got[8][0] == "event_time: in the future"
    assert got[10][0] == "amount: not finite"
    assert json.loads(got[3][2])["event_type"] == "clik"  # the raw row, as the source had it
    assert report.reasons.most_common(1)[0][1] == 1
    # Re-ingesting does not quarantine the same rows twice.
    ingest_files(workspace, [path], force=True)
    assert rows(workspace, "SELECT count(*) FROM quarantine")[0][0] == 8


def test_jsonl_bad_lines_are_quarantined_with_line_numbers(workspace: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text(
        '{"customer_id": "c1", "event_type": "page_view", "event_time": "2024-01-01T10:00:00Z", "page": "/"}\n'
        "{not json\n"
        "[1, 2]\n"
        '{"customer_id": "c2", "event_type": "page_view", "event_time": 1704103200}\n',
        encoding="utf-8",
    )
    report = ingest_files(workspace, [path])
    assert (report.accepted, report.quarantined) == (2, 2)
    assert sorted(r[0] for r in rows(workspace, "SELECT row_number FROM quarantine")) == [2, 3]
    props = rows(workspace, "SELECT properties FROM events WHERE customer_id = 'c1'")[0][0]
    assert json.loads(props) == {"page": "/"}  # unmapped columns are kept


def test_unnamed_columns_are_kept_under_their_position(workspace: Workspace, tmp_path: Path) -> None:
    # A trailing delimiter in a CSV header, or a JSON key "", names a column nothing; SQL cannot refer to it.
    csv_path = tmp_path / "e.csv"
    csv_path.write_text("customer_id,event_type,event_time,\nc1,page_view,2024-01-01T10:00:00Z,x\n")
    jsonl_path = tmp_path / "e.jsonl"
    jsonl_path.write_text(
        '{"customer_id": "c2", "event_type": "page_view", "event_time": 1704103200, "": "y"}\n'
    )
    report = ingest_files(workspace, [csv_path, jsonl_path])
    assert (report.accepted, report.quarantined) == (2, 0)
    props = dict(rows(workspace, "SELECT customer_id, properties FROM events"))
    assert json.loads(props["c1"]) == {"column4": "x"}
    assert json.loads(props["c2"]) == {"column4": "y"}


def test_mapping_zones_delay_and_availability(tmp_path: Path) -> None:
    ws = write_spec(
        tmp_path,
        """
sources:
  - name: web
    path: web.csv
    columns: {customer_id: user, event_type: action, event_time: ts, available_at: loaded}
    event_type_values: {add: cart_add, view: page_view}
    timezone: America/New_York
  - name: orders
    path: orders.csv
    event_type: purchase
    columns: {customer_id: customer, event_time: at, amount: total}
    timestamp_format: "%d/%m/%Y %H:%M"
    timezone: Europe/Paris
    delay: 2h
""",
    )
    write_csv(
        tmp_path / "web.csv",
        """
user,action,ts,loaded
u1,add,2024-07-01 12:00:00,
u1,view,2024-07-01 12:05:00,2024-07-03T00:00:00Z
u1,view,2024-07-01 12:06:00,2024-06-01T00:00:00Z
""",
    )
    write_csv(tmp_path / "orders.csv", "customer,at,total\nu2,02/07/2024 09:30,42.0\n")
    report = ingest_files(ws, [tmp_path / "web.csv", tmp_path / "orders.csv"])
    assert report.accepted == 4 and report.quarantined == 0
    got = rows(
        ws,
        "SELECT customer_id, event_type, event_time, available_at, amount, source FROM events ORDER BY event_time",
    )
    (add, view_late, view_early, order) = got
    ny = datetime(2024, 7, 1, 16, 0, tzinfo=UTC)  # 12:00 EDT
    assert (add[1], add[2], add[3]) == ("cart_add", ny, ny)
    assert view_late[3] == datetime(2024, 7, 3, tzinfo=UTC)  # a late event keeps its own availability
    assert view_early[3] == view_early[2]  # availability is never before the event happened
    assert order[1:3] == ("purchase", datetime(2024, 7, 2, 7, 30, tzinfo=UTC))  # 09:30 CEST
    assert order[3] == order[2] + timedelta(hours=2) and order[4] == 42.0 and order[5] == "orders"


def test_live_table_ingest_stamps_availability_now(workspace: Workspace) -> None:
    table = canonical_events(5, start=datetime(2024, 1, 1, tzinfo=UTC))
    before = datetime.now(UTC)
    report = ingest_table(workspace, table, live=True)
    assert report.accepted == 5
    for event_time, available_at, ingested_at in rows(
        workspace, "SELECT event_time, available_at, ingested_at FROM events"
    ):
        assert available_at == ingested_at >= before > event_time


def test_reads_by_customer_and_time(workspace: Workspace, tmp_path: Path) -> None:
    ingest_files(workspace, [write_parquet(canonical_events(500, customers=10), tmp_path / "e.parquet")])
    log = open_event_log(workspace)
    start = datetime(2024, 3, 1, 1, tzinfo=UTC)
    got = log.read(customer_ids=["c3"], start=start, end=start + timedelta(hours=2))
    assert got.num_rows == 12 and set(got.column("customer_id").to_pylist()) == {"c3"}
    assert log.count() == 500


def test_missing_paths_are_clear_errors(workspace: Workspace, tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="no such file"):
        ingest_files(workspace, [tmp_path / "nope.csv"])
    with pytest.raises(IngestError, match="no files match"):
        ingest_files(workspace, [str(tmp_path / "*.parquet")])


def test_attribute_timestamps_are_stored_as_iso_utc(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    from propensity.events.ingest import ingest_attributes

    pq.write_table(
        pa.table(
            {
                "customer_id": ["a"],
                "signup_at": pa.array(
                    [datetime(2022, 8, 17, 1, 8, 34, 119906, tzinfo=UTC)], pa.timestamp("us", tz="UTC")
                ),
                "trial_end": pa.array(
                    [datetime(2022, 8, 17, 1, 8)]
                ),  # naive: wall-clock time in the source's zone
                "plan": ["pro"],
            }
        ),
        tmp_path / "customers.parquet",
    )
    ws = write_spec(
        tmp_path, "attributes:\n  - name: crm\n    path: customers.parquet\n    timezone: Europe/Paris\n"
    )
    assert ingest_attributes(ws, ws.spec.attributes[0]) == 3
    got = dict(rows(ws, "SELECT attribute, value FROM attributes"))
    assert got == {
        "signup_at": "2022-08-17T01:08:34.119906Z",
        "trial_end": "2022-08-16T23:08:00.000000Z",
        "plan": "pro",
    }


def test_typed_parquet_values_are_judged_and_explained(workspace: Workspace, tmp_path: Path) -> None:
    table = canonical_events(4)
    table = table.set_column(
        table.schema.get_field_index("amount"),
        "amount",
        pa.array([float("nan"), -5.0, None, 12.5], pa.float64()),
    )
    table = table.set_column(
        table.schema.get_field_index("event_type"), "event_type", pa.array(["purchase"] * 4)
    )
    report = ingest_files(workspace, [write_parquet(table, tmp_path / "typed.parquet")])
    assert (report.accepted, report.quarantined) == (2, 2)
    details = dict(rows(workspace, "SELECT row_number, detail FROM quarantine"))
    assert details[1] == "amount nan is not a finite number"
    assert details[2].startswith("amount -5.0 is negative")


def test_parquet_read_by_duckdb_in_slices_equals_the_same_rows_read_as_csv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The direct Parquet path (DuckDB reads the file, a row range per statement) keeps every guarantee of the
    Arrow path: the same events, the same quarantine rows (reason, detail, raw row, row number), the same
    counts; ids repeated inside the file (across slices) and ids already in the log are duplicates."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    n = 3000
    base = canonical_events(n, customers=40, seed=3)
    text = {c: [None if v is None else str(v) for v in base.column(c).to_pylist()] for c in base.column_names}
    text["event_time"] = [t.replace(" ", "T").replace("+00:00", "Z") for t in text["event_time"]]
    for i in range(0, n, 97):  # a sprinkling of every kind of bad value
        kind = (i // 97) % 5
        if kind == 0:
            text["customer_id"][i] = ""
        elif kind == 1:
            text["event_time"][i] = "yesterday"
        elif kind == 2:
            text["amount"][i], text["event_type"][i] = "-3", "purchase"
        elif kind == 3:
            text["amount"][i] = "abc"
        else:
            text["event_type"][i] = "clik"
    for i in range(50, n, 211):  # an id repeated later in the file, with other content
        text["event_id"][i + 100] = text["event_id"][i]
    table = pa.table({c: pa.array(v, pa.string()) for c, v in text.items()})
    seen = base.slice(1000, 200)  # ids e1000..e1199 are already in the log
    results = {}
    for fmt in ("parquet", "csv"):
        root = tmp_path / fmt
        root.mkdir()
        ws = Workspace.open(root)
        ingest_files(ws, [write_parquet(seen, root / "seen.parquet")])
        path = root / f"events.{fmt}"
        if fmt == "parquet":
            pq.write_table(table, path, row_group_size=500)
            monkeypatch.setenv("PROPENSITY_INGEST_BATCH_ROWS", "700")  # slices across row groups
        else:
            pacsv.write_csv(table, path)
            monkeypatch.delenv("PROPENSITY_INGEST_BATCH_ROWS", raising=False)
        report = ingest_files(ws, [path])
        events = rows(
            ws, "SELECT event_id, customer_id, event_type, event_time, amount, sku FROM events ORDER BY 1"
        )
        quarantine = rows(
            ws,
            "SELECT row_number, reason, detail, raw FROM quarantine WHERE source_file LIKE '%events.%' ORDER BY 1",
        )
        results[fmt] = (report.accepted, report.duplicates, report.quarantined, events, quarantine)
    assert results["parquet"][:3] == results["csv"][:3]
    assert results["parquet"][0] > 2000 and results["parquet"][1] >= 150 and results["parquet"][2] >= 30
    assert results["parquet"][3] == results["csv"][3]
    assert results["parquet"][4] == results["csv"][4]
