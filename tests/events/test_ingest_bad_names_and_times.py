"""Regressions (issue 19, items 5 and 6) in bulk ingest: columns whose names differ only in case are quarantined
naming both (one silently stood for the other), and timestamps outside years 1–9999 ("-infinity", BC dates,
year 0) are quarantined instead of committed."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from propensity.events.ingest import ingest_files
from propensity.events.log import open_event_log
from propensity.workspace import Workspace


def _quarantine(ws: Workspace, path: Path) -> list[tuple[str, str]]:
    with open_event_log(ws).connection() as con:
        return con.execute(
            "SELECT reason, detail FROM quarantine WHERE source_file = ? ORDER BY row_number", [str(path)]
        ).fetchall()


def _customers(ws: Workspace) -> set[str]:
    with open_event_log(ws).connection() as con:
        return {r[0] for r in con.execute("SELECT DISTINCT customer_id FROM events").fetchall()}


def test_columns_differing_only_in_case_are_quarantined_naming_both(
    workspace: Workspace, tmp_path: Path
) -> None:
    csv_path = tmp_path / "clash.csv"
    csv_path.write_text(
        "CUSTOMER_ID,customer_id,event_type,event_time\nvictim-x,real-owner,page_view,2024-01-01T10:00:00Z\n"
    )
    jsonl_path = tmp_path / "clash.jsonl"
    jsonl_path.write_text(json.dumps({"CUSTOMER_ID": "victim-y", "customer_id": "real-owner", "event_type":
                                      "page_view", "event_time": "2024-01-01T10:00:00Z"}) + "\n")  # fmt: skip
    parquet_path = tmp_path / "clash.parquet"
    pq.write_table(pa.table({"customer_id": ["real-owner"], "Event_Type": ["page_view"], "event_type": ["purchase"],
                             "event_time": ["2024-01-01T10:00:00Z"]}), parquet_path)  # fmt: skip
    report = ingest_files(workspace, [csv_path, jsonl_path, parquet_path])
    assert (report.accepted, report.quarantined) == (0, 3)
    for path, (a, b) in ((csv_path, ("CUSTOMER_ID", "customer_id")), (jsonl_path, ("CUSTOMER_ID", "customer_id")),
                         (parquet_path, ("Event_Type", "event_type"))):  # fmt: skip
        [(reason, detail)] = _quarantine(workspace, path)
        assert reason == "columns: names differ only in case"
        assert repr(a) in detail and repr(b) in detail
    assert not {"victim-x", "victim-y", "real-owner"} & _customers(workspace)


def test_timestamps_outside_years_1_to_9999_are_quarantined(workspace: Workspace, tmp_path: Path) -> None:
    path = tmp_path / "times.csv"
    path.write_text(
        "customer_id,event_type,event_time\n"
        "t1,page_view,-infinity\n"
        "t2,page_view,infinity\n"
        "t3,page_view,0044-03-15T00:00:00 BC\n"
        "t4,page_view,0000-01-01T00:00:00Z\n"
        "t5,page_view,-0044-03-15T00:00:00Z\n"
        "t6,page_view,0044-03-15 (BC)\n"
        "ok,page_view,0001-01-02T00:00:00Z\n"
    )
    report = ingest_files(workspace, [path])
    assert (report.accepted, report.quarantined) == (1, 6)
    reasons = [r for r, _ in _quarantine(workspace, path)]
    assert set(reasons) <= {"event_time: out of range", "event_time: not a timestamp"}, reasons
    assert "ok" in _customers(workspace) and not {"t1", "t2", "t3", "t4", "t5", "t6"} & _customers(workspace)
