"""Every kind the champion may be (linear, LightGBM, blend) works wherever a model is used: the bundle, the
serving model, batch scoring with reason codes, the promotion gate and retraining's comparison, across kinds."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from tests.training.synthetic_project import START, build_workspace

from propensity.core.score_row import UTC_US
from propensity.features.offline import compute_features
from propensity.registry.gate import evaluate_gate
from propensity.registry.registry import Registry
from propensity.registry.train import train_project
from propensity.retraining.retrain import compare
from propensity.scoring.batch import score_batch
from propensity.scoring.model import ServingModel
from propensity.workspace import Workspace

DAYS = 120
AS_OF = START + timedelta(days=DAYS)
KINDS = ("linear", "lightgbm", "blend")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, dict[str, str]]:
    root = Path(tmp_path_factory.mktemp("kinds"))
    build_workspace(root, customers=400, days=DAYS, seed=5)
    out = {}
    for kind in KINDS:
        spec = yaml.safe_load((root / "propensity.yaml").read_text())
        spec["actions"] = [{"template": "buy"}]
        spec["training"] = {"models": {"candidates": [kind], "backtest_folds": 1}}
        (root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        out[kind] = train_project(Workspace.open(root), write_report=False).bundle_id
    return Workspace.open(root), out


def _features(ws: Workspace, customers: list[str]) -> pa.Table:
    from propensity.events.log import DuckDBEventLog

    spine = pa.table({"customer_id": customers, "as_of": pa.array([AS_OF] * len(customers), UTC_US)})
    with DuckDBEventLog(ws.db_path).connection() as con:
        return compute_features(con, ws.spec.features, spine)


@pytest.mark.slow
def test_each_kind_is_served_and_batch_scored_with_the_training_scores(
    bundles: tuple[Workspace, dict[str, str]],
) -> None:
    ws, ids = bundles
    registry = Registry(ws)
    feats = _features(ws, [f"c{i}" for i in range(60)])
    for kind, bundle_id in ids.items():
        bundle = registry.load(bundle_id)
        assert bundle.manifest.actions["buy_7d"].model_kind == kind
        files = {p.name for p in (registry.path(bundle_id) / "buy_7d").iterdir()}
        assert ("linear.json" in files) == (kind != "lightgbm") and ("model.txt" in files) == (
            kind != "linear"
        )
        expected = bundle.predict("buy_7d", feats)
        model = ServingModel.from_bundle_dir(registry.path(bundle_id))
        encoder = model.encoder_for(feats.column_names)
        rows = [encoder.encode([feats.column(c)[k].as_py() for c in feats.column_names]) for k in range(60)]
        single = np.array([model.probabilities(r)[0] for r in rows])
        np.testing.assert_allclose(single, expected, rtol=0, atol=1e-12)
        np.testing.assert_allclose(
            model.probabilities_many(np.array(rows))[:, 0], expected, rtol=0, atol=1e-12
        )
        codes = model.reason_codes(rows[0], [0])[0]
        assert codes and all(c["direction"] in ("up", "down") for c in codes)
        result = score_batch(ws, as_of=AS_OF, bundle=bundle_id, customers=[f"c{i}" for i in range(60)])
        buy = result.rows.filter(pc.field("eligible")).sort_by("customer_id")
        got = dict(zip(buy.column("customer_id").to_pylist(), buy.column("score").to_pylist(), strict=True))
        want = dict(zip(feats.column("customer_id").to_pylist(), expected.tolist(), strict=True))
        assert got and all(abs(got[c] - want[c]) < 1e-9 for c in got), kind


@pytest.mark.slow
def test_the_gate_and_retraining_compare_bundles_of_different_kinds(
    bundles: tuple[Workspace, dict[str, str]],
) -> None:
    ws, ids = bundles
    registry = Registry(ws)
    for production, candidate in (("lightgbm", "linear"), ("linear", "blend"), ("blend", "lightgbm")):
        prod, cand = registry.load(ids[production]), registry.load(ids[candidate])
        gate = evaluate_gate(ws, cand, prod, ws.spec.training.promotion)
        assert {c.metric for c in gate.checks} == {"roc_auc", "ece"}
        assert all(c.basis == "same test window" for c in gate.checks)
        checks, metrics, _, _ = compare(ws, cand, prod, ws.spec.training.promotion)
        assert metrics["buy_7d"]["challenger"]["roc_auc"] > 0.6 and len(checks) == 2
        # Both are scored with their evaluation models (never fitted on the test rows), not the served ones.
        assert cand.has_evaluation("buy_7d") and prod.has_evaluation("buy_7d")


@pytest.mark.slow
def test_monitors_score_a_linear_production_bundle(bundles: tuple[Workspace, dict[str, str]]) -> None:
    from propensity.monitoring.runner import run_monitors

    ws, ids = bundles
    Registry(ws).set_production(ids["linear"], forced=True, reason="test")
    run = run_monitors(ws, as_of=AS_OF, send_alerts=False, store=False)
    for name in ("score_psi", "calibration_ece"):
        r = run.result(name, "buy_7d")
        assert r is not None and r.status in ("ok", "alert"), (name, r)
