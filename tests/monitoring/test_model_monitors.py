"""Score drift, calibration and AUC on matured labels, and CBPE, on a trained synthetic workspace."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from tests.training.synthetic_project import trained_workspace

from propensity.events.ingest import ingest_table
from propensity.events.log import DuckDBEventLog
from propensity.monitoring.runner import run_monitors
from propensity.scoring.batch import score_and_store
from propensity.workspace import Workspace

pytestmark = pytest.mark.slow
MODEL_MONITORS = ("score_psi", "calibration_ece", "auc_drop", "expected_auc_drop")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, datetime]:
    ws = trained_workspace(
        tmp_path_factory.mktemp("trained"), customers=600, days=150, seed=5,
        spec={
            "actions": [{"template": "buy"}, {"template": "respond"}],
            "training": {"min_positives": 20, "min_negatives": 20},  # respond_7d has few positives at this size
        },
    )  # fmt: skip
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        last = con.execute("SELECT max(event_time) FROM events").fetchall()[0][0]
    spine = ws.spec.training.spine
    as_of = spine.align + ((last - spine.align) // spine.slide.timedelta) * spine.slide.timedelta
    return ws, as_of


def _copy(ws: Workspace, dest: Path) -> Workspace:
    shutil.copytree(ws.root, dest / "ws")
    return Workspace.open(dest / "ws")


def test_model_monitors_are_quiet_and_cbpe_tracks_the_measured_figures(
    trained: tuple[Workspace, datetime],
) -> None:
    ws, as_of = trained
    run = run_monitors(ws, as_of=as_of, send_alerts=False, store=False)
    for name in MODEL_MONITORS:
        r = run.result(name, "buy_7d")
        assert r is not None and r.status == "ok", (name, r)
    # A triggered action (scored at each campaign send); its latest week here has no responder, so no AUC.
    for name in ("score_psi", "calibration_ece", "expected_auc_drop"):
        r = run.result(name, "respond_7d")
        assert r is not None and r.status == "ok", (name, r)
    periods = run.result("calibration_ece", "buy_7d").details["periods"]  # type: ignore[union-attr]
    assert len(periods) == ws.spec.monitoring.calibration_periods
    assert all(
        datetime.fromisoformat(p["as_of"]) + timedelta(days=7) <= as_of for p in periods
    )  # matured only
    expected = np.array([p["expected"]["expected_auc"] for p in periods])
    measured = np.array([p["roc_auc"] for p in periods])
    assert abs(expected.mean() - measured.mean()) < 0.03
    rate_gap = np.mean([p["expected"]["expected_rate"] - p["measured"]["rate"] for p in periods])
    assert abs(rate_gap) < 0.03


def test_the_latest_scoring_run_is_what_score_drift_reads(
    trained: tuple[Workspace, datetime], tmp_path: Path
) -> None:
    ws = _copy(trained[0], tmp_path)
    as_of = trained[1]
    stored = score_and_store(ws, as_of=as_of)
    run = run_monitors(ws, as_of=as_of, send_alerts=False, store=False)
    r = run.result("score_psi", "buy_7d")
    assert r is not None and r.details["source"] == f"score run {stored.run.run_id}" and r.status == "ok"


def test_a_behaviour_shift_fires_feature_score_and_volume_monitors(
    trained: tuple[Workspace, datetime], tmp_path: Path
) -> None:
    ws = _copy(trained[0], tmp_path)
    as_of = trained[1]
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        customers = [r[0] for r in con.execute("SELECT DISTINCT customer_id FROM events").fetchall()]
    # Every customer suddenly browses a lot in the last day and a half (a tracking bug doubling page views, say).
    times = [as_of - timedelta(hours=1 + 2 * k) for k in range(18)]
    n = len(customers) * len(times)
    burst = pa.table({
        "event_id": [f"burst-{i}" for i in range(n)],
        "customer_id": [c for c in customers for _ in times],
        "event_type": ["page_view"] * n,
        "event_time": pa.array([t for _ in customers for t in times], pa.timestamp("us", tz="UTC")),
        "available_at": pa.array([t for _ in customers for t in times], pa.timestamp("us", tz="UTC")),
    })  # fmt: skip
    ingest_table(ws, burst, source="events")
    run = run_monitors(ws, as_of=as_of, send_alerts=False, store=False)
    assert run.result("feature_psi", "pv_7d").status == "alert"  # type: ignore[union-attr]
    assert run.result("volume", "events").status == "alert"  # type: ignore[union-attr]
    assert run.result("score_psi", "buy_7d").status != "ok"  # type: ignore[union-attr]
    # Labels of matured periods do not change, nor do features that ignore page views.
    assert run.result("calibration_ece", "buy_7d").status == "ok"  # type: ignore[union-attr]
    assert run.result("feature_psi", "spend_90d").status == "ok"  # type: ignore[union-attr]
    assert run.result("freshness_silence", "events").status == "ok"  # type: ignore[union-attr]


def test_matured_periods_are_computed_once_per_bundle(
    trained: tuple[Workspace, datetime], tmp_path: Path
) -> None:
    ws = _copy(trained[0], tmp_path)
    as_of = trained[1]
    folder = ws.state_dir / "monitoring" / "periods"
    shutil.rmtree(folder, ignore_errors=True)  # the copy may carry what other tests cached
    first = run_monitors(ws, as_of=as_of - timedelta(days=7), send_alerts=False, store=False)
    cached = sorted(folder.rglob("*.json"))
    assert len(cached) == 2 * ws.spec.monitoring.calibration_periods  # two actions
    later = run_monitors(ws, as_of=as_of, send_alerts=False, store=False)
    assert len(sorted(folder.rglob("*.json"))) == len(cached) + 2  # one new period each
    before = first.result("calibration_ece", "buy_7d").details["periods"]  # type: ignore[union-attr]
    after = later.result("calibration_ece", "buy_7d").details["periods"]  # type: ignore[union-attr]
    assert before[1:] == after[:-1]  # the shared periods are read back unchanged


def test_outcomes_the_model_cannot_explain_fire_calibration_and_auc(
    trained: tuple[Workspace, datetime], tmp_path: Path
) -> None:
    """Purchases at random (unrelated to any score) in the latest matured label windows: the model under-predicts
    and ranks worse there. The periods were cached by earlier runs; the new events must invalidate them."""
    ws = _copy(trained[0], tmp_path)
    as_of = trained[1]
    run_monitors(ws, as_of=as_of, send_alerts=False, store=False)  # caches every matured period
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        customers = [
            r[0] for r in con.execute("SELECT DISTINCT customer_id FROM events ORDER BY 1").fetchall()
        ]
    rng = np.random.default_rng(3)
    rows = []
    for k in range(2):  # the two latest matured weekly periods
        when = as_of - timedelta(days=7 * (k + 1)) + timedelta(days=2, hours=10)
        for c in rng.choice(customers, size=len(customers) // 2, replace=False):
            rows.append((f"random-buy-{k}-{c}", str(c), when))
    ingest_table(ws, pa.table({
        "event_id": [r[0] for r in rows], "customer_id": [r[1] for r in rows],
        "event_type": ["purchase"] * len(rows), "amount": [20.0] * len(rows),
        "event_time": pa.array([r[2] for r in rows], pa.timestamp("us", tz="UTC")),
        "available_at": pa.array([r[2] for r in rows], pa.timestamp("us", tz="UTC")),
    }), source="events")  # fmt: skip
    run = run_monitors(ws, as_of=as_of, send_alerts=False, store=False)
    ece = run.result("calibration_ece", "buy_7d")
    auc = run.result("auc_drop", "buy_7d")
    assert ece is not None and ece.status == "alert", ece
    assert auc is not None and auc.status == "alert", auc
    assert run.result("freshness_silence", "events").status == "ok"  # type: ignore[union-attr]
