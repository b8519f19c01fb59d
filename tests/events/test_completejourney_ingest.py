"""The real data set end to end: export Complete Journey, ingest it with its example project, check real counts."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from propensity.datasets.examples import example_spec_text
from propensity.events.ingest import ingest_attributes, ingest_files
from propensity.events.log import open_event_log
from propensity.features import compute_features
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

    # The example's discount features read the discounts as the ingested properties hold them (text; an
    # undiscounted line is '0.0'): over every household's whole history they count exactly the lines the source
    # data discounts (21,889 lines with a coupon discount, 10,300 with a coupon match, 736,369 at a sale price).
    lifetime = [f for f in ws.spec.features if f.name == "coupon_disc_lines_lifetime"]
    spine = pa.table(
        {
            "customer_id": pa.array(sorted(_households(ws))),
            "as_of": pa.array([datetime(2018, 2, 1, tzinfo=UTC)] * 2_469, pa.timestamp("us", tz="UTC")),
        }
    )
    with open_event_log(ws).connection(read_only=True) as con:
        counted = compute_features(con, lifetime, spine).column("coupon_disc_lines_lifetime")
        by_predicate = con.execute(
            "SELECT count(*) FILTER (WHERE properties->>'coupon_disc' != '0.0'), "
            "count(*) FILTER (WHERE properties->>'coupon_match_disc' != '0.0'), "
            "count(*) FILTER (WHERE properties->>'retail_disc' != '0.0') FROM events WHERE event_type = 'purchase'"
        ).fetchall()[0]
    assert pc.sum(counted).as_py() == 21_889
    assert by_predicate == (21_889, 10_300, 736_369)

    # A second ingest of the same files changes nothing.
    again = ingest_files(ws, files)
    assert all(f.skipped_unchanged for f in again.files)


def _households(ws: Workspace) -> list[str]:
    with open_event_log(ws).connection(read_only=True) as con:
        return [r[0] for r in con.execute("SELECT DISTINCT customer_id FROM events").fetchall()]
