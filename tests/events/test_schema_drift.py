"""A declared source's columns compared with its last-seen schema at every ingest (issue 19, item 8): new,
missing, renamed and retyped columns reported; the source's policy accepts the file or quarantines its rows."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tests.conftest import write_spec
from typer.testing import CliRunner

from propensity.cli.app import app
from propensity.events.ingest import ingest_files
from propensity.events.log import open_event_log
from propensity.events.schema_drift import compare, last_seen, observe
from propensity.workspace import Workspace

SPEC = """
sources:
  - name: esp
    path: esp
    columns: {{customer_id: contact, event_time: sent_at}}
    schema_drift: {policy}
"""
GOOD = "contact,event_type,sent_at,amount\nc1,page_view,2024-01-01T10:00:00Z,1.5\nc2,page_view,2024-01-02T10:00:00Z,2\n"


def _events(ws: Workspace) -> int:
    with open_event_log(ws).connection() as con:
        return int(con.execute("SELECT count(*) FROM events").fetchall()[0][0])


def _write(root: Path, name: str, text: str) -> Path:
    path = root / "esp" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def test_kinds_are_the_same_for_a_csv_and_a_parquet_export() -> None:
    text = pa.table({"a": ["1", "2.5", None], "t": ["2024-01-01T10:00:00Z", "2024-01-02", ""],
                     "b": ["true", "False", None], "s": ["x", "1", "y"], "e": pa.array([None, None, None], pa.string())})  # fmt: skip
    typed = pa.table({"a": [1.0, 2.5, None], "t": pa.array([0, 1, None], pa.timestamp("us")),
                      "b": [True, False, None], "s": ["x", "1", "y"], "e": pa.nulls(3)})  # fmt: skip
    expected = {"a": "number", "t": "timestamp", "b": "bool", "s": "text", "e": "unknown"}
    assert observe(text.schema, text) == expected == observe(typed.schema, typed)
    drift = compare(
        {"customer": "text", "event_ts": "timestamp", "amount": "number", "gone": "text", "empty": "text"},
        {
            "customer": "text",
            "event_time": "timestamp",
            "amount": "text",
            "extra": "bool",
            "empty": "unknown",
        },
    )
    assert drift.renamed == [("event_ts", "event_time")] and drift.missing == ["gone"]
    assert drift.new == ["extra"] and drift.retyped == [("amount", "number", "text")]
    assert "renamed event_ts → event_time" in drift.describe()


def test_a_changed_export_is_reported_and_accepted_by_default(tmp_path: Path) -> None:
    ws = write_spec(tmp_path, SPEC.format(policy="accept"))
    first = ingest_files(ws, [_write(tmp_path, "a.csv", GOOD)])
    assert first.accepted == 2 and first.files[0].schema_drift is None  # the first file sets the schema
    assert last_seen(ws, "esp") == {
        "contact": "text",
        "event_type": "text",
        "sent_at": "timestamp",
        "amount": "number",
    }
    # The ESP renamed a column, dropped one, added one and now writes text where amounts were.
    changed = "contact,event_type,sent_time,amount,campaign\nc3,page_view,2024-01-03T10:00:00Z,n/a,x\n"
    report = ingest_files(ws, [_write(tmp_path, "b.csv", changed)])
    drift = report.files[0].schema_drift
    assert drift == {"new": ["campaign"], "missing": [], "renamed": [{"from": "sent_at", "to": "sent_time"}],
                     "retyped": [{"column": "amount", "from": "number", "to": "text"}]}  # fmt: skip
    assert not report.files[0].schema_quarantined
    assert report.quarantined == 1  # the mapping still names sent_at: the row lacks its event_time
    assert last_seen(ws, "esp") == {"contact": "text", "event_type": "text", "sent_time": "timestamp",
                                    "amount": "text", "campaign": "text"}  # fmt: skip
    same = ingest_files(ws, [_write(tmp_path, "c.csv", changed.replace("c3", "c4"))])
    assert same.files[0].schema_drift is None


def test_quarantine_policy_holds_a_changed_file_until_it_is_accepted(tmp_path: Path) -> None:
    ws = write_spec(tmp_path, SPEC.format(policy="quarantine"))
    pq.write_table(pa.table({"contact": ["c1"], "event_type": ["page_view"], "sent_at": ["2024-01-01T10:00:00Z"]}),
                   tmp_path / "first.parquet")  # fmt: skip
    (tmp_path / "esp").mkdir()
    (tmp_path / "first.parquet").rename(tmp_path / "esp" / "first.parquet")
    assert ingest_files(ws, [tmp_path / "esp" / "first.parquet"]).accepted == 1
    retyped = _write(tmp_path, "b.csv", "contact,event_type,sent_at\n17,page_view,2024-01-05T10:00:00Z\n")
    report = ingest_files(ws, [retyped])
    f = report.files[0]
    assert f.schema_quarantined and (f.accepted, f.quarantined) == (0, 1) and _events(ws) == 1
    assert f.schema_drift == {"new": [], "missing": [], "renamed": [],
                              "retyped": [{"column": "contact", "from": "text", "to": "number"}]}  # fmt: skip
    with open_event_log(ws).connection() as con:
        [(reason, detail, raw)] = con.execute(
            "SELECT reason, detail, raw FROM quarantine WHERE source_file = ?", [str(retyped)]
        ).fetchall()
    assert reason == "schema_drift" and "retyped contact text → number" in detail and "17" in raw
    again = ingest_files(ws, [retyped])  # held, not recorded as ingested: still held, nothing twice
    assert again.files[0].schema_quarantined and not again.files[0].skipped_unchanged and _events(ws) == 1
    runner = CliRunner(env={"COLUMNS": "300"})
    held = runner.invoke(app, ["ingest", str(retyped), "-w", str(tmp_path), "--strict"])
    assert (
        held.exit_code == 1
        and "schema drift, file quarantined" in held.output
        and "--accept-schema" in held.output
    )
    accepted = runner.invoke(app, ["ingest", str(retyped), "-w", str(tmp_path), "--accept-schema"])
    assert accepted.exit_code == 0, accepted.output
    assert "schema drift" in accepted.output and _events(ws) == 2
    assert last_seen(ws, "esp")["contact"] == "number"
