"""The real data set end to end: export Complete Journey, ingest it with its example project, check real counts."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from propensity.datasets.examples import example_spec_text
from propensity.events.ingest import ingest_attributes, ingest_files
from propensity.events.log import open_event_log
from propensity.workspace import Workspace


@pytest.mark.slow
@pytest.mark.parametrize("event_storage", ["duckdb"], indirect=True)  # 1.5M events: once is enough for CI
def test_complete_journey_ingests_with_its_real_counts(
    tmp_path: Path, cj_export: tuple[Any, Path, Any]
) -> None:
    (tmp_path / "propensity.yaml").write_text(example_spec_text("completejourney"), encoding="utf-8")
    shutil.copytree(cj_export[1], tmp_path / "data" / "completejourney")  # the session's export
    ws = Workspace.open(tmp_path)
    files = [str(ws.spec.resolve(s.path)) for s in ws.spec.sources]
    report = ingest_files(ws, files)
    assert (report.accepted, report.duplicates, report.quarantined) == (1_477_998, 0, 0)
    for attribute_source in ws.spec.attributes:
        ingest_attributes(ws, attribute_source)

    with open_event_log(ws).connection(read_only=True) as con:
        by_type = dict(con.execute("SELECT event_type, count(*) FROM events GROUP BY 1").fetchall())
        households = con.execute("SELECT count(DISTINCT customer_id) FROM events").fetchall()[0][0]
        first, last = con.execute(
            "SELECT min(event_time) FILTER (WHERE event_type = 'purchase'), max(event_time) FROM events"
        ).fetchall()[0]
        demographics = con.execute("SELECT count(DISTINCT customer_id) FROM attributes").fetchall()[0][0]
    assert by_type == {"purchase": 1_469_307, "campaign_sent": 6_589, "coupon_redemption": 2_102}
    assert households == 2_469 and demographics == 801
    assert (first.year, first.month, first.day) == (2017, 1, 1) and (last.year, last.month, last.day) == (
        2018,
        1,
        1,
    )

    # A second ingest of the same files changes nothing.
    again = ingest_files(ws, files)
    assert all(f.skipped_unchanged for f in again.files)
