"""Online == offline at scale: 12,000 synthetic customers, the whole example feature set, every value compared.

The synthetic data (four weeks, with its late events, duplicates and out-of-order arrivals) is ingested into a
workspace with the example project. The spine holds every customer at three cutoffs: two Mondays 00:00 (where
the generator's weekly state is read) and a mid-week time in the afternoon, when sessions are in progress. The
offline engine computes the spine in one query; the online engine replays the log in ``available_at`` order and
is read at each cutoff once exactly the events available by then have been applied. Integers, strings,
booleans and nulls must be equal, floats within 1e-9; a mismatch report names the customer, time and feature.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from propensity.events.ingest import ingest_attributes, ingest_files
from propensity.events.log import DuckDBEventLog
from propensity.features import FeaturePlan, compute_features
from propensity.features.inspect import mismatches, replay_online
from propensity.workspace import Workspace

PROJECTS = Path(__file__).resolve().parents[2] / "src/propensity/datasets/projects"
CUSTOMERS = 12_000
START = datetime(2025, 9, 1, tzinfo=UTC)  # a Monday


@pytest.mark.slow
def test_online_equals_offline_for_every_value_at_scale(tmp_path: Path) -> None:
    from propensity.datasets.synthetic import generate

    shutil.copy(PROJECTS / "synthetic.yaml", tmp_path / "propensity.yaml")
    ws = Workspace.open(tmp_path, require_spec=True)
    generate(tmp_path / "data/synthetic", customers=CUSTOMERS, days=28, seed=11, start=START)
    source = ws.spec.source("events")
    report = ingest_files(ws, [str(p) for p in sorted(tmp_path.glob(source.path))], source=source.name)
    assert report.accepted > 200_000
    for attrs in ws.spec.attributes:
        ingest_attributes(ws, attrs)
    plan = FeaturePlan(ws.spec.features)
    assert len(plan.names) >= 40

    cutoffs = [
        START + timedelta(days=21),
        START + timedelta(days=25, hours=15, minutes=7),
        START + timedelta(days=28),
    ]
    with DuckDBEventLog(ws.db_path).connection() as con:
        ids = [r[0] for r in con.execute("SELECT DISTINCT customer_id FROM events ORDER BY 1").fetchall()]
        assert len(ids) >= 10_000
        spine = pa.table(
            {
                "customer_id": pa.array([c for t in cutoffs for c in ids], pa.string()),
                "as_of": pa.array([t for t in cutoffs for _ in ids], pa.timestamp("us", tz="UTC")),
            }
        )
        offline = compute_features(con, plan, spine)
        online = replay_online(con, plan, spine)
    compared, bad = mismatches(offline, online, plan.names, limit=25)
    assert compared == spine.num_rows * len(plan.names)  # 100% of values
    assert not bad, f"{len(bad)}+ mismatches, e.g.:\n" + "\n".join(map(str, bad))
    # Guard against a vacuous pass: the data must reach most features.
    assert sum(offline.column("purchases_7d").to_pylist()) > 1_000
    assert sum(1 for v in offline.column("session_page_views").to_pylist() if v) > 50
