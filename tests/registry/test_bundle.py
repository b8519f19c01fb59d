"""Bundles and the registry on a small trained workspace: integrity, promote, gated refusal, force, rollback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest
import yaml
from tests.training.synthetic_project import build_workspace

from propensity.registry.bundle import CorruptBundleError, load_bundle
from propensity.registry.gate import PromotionRefusedError, promote
from propensity.registry.registry import Registry, RegistryError
from propensity.registry.train import TrainingResult, train_project
from propensity.workspace import Workspace


def _set_training(ws: Workspace, **training: object) -> Workspace:
    path = ws.root / "propensity.yaml"
    spec = yaml.safe_load(path.read_text())
    spec["training"] = training
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return Workspace.open(ws.root)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, TrainingResult]:
    root = tmp_path_factory.mktemp("registry")
    ws = build_workspace(root, customers=1500, days=182, seed=5)
    spec = yaml.safe_load((root / "propensity.yaml").read_text())
    spec["actions"] = [{"template": "buy"}, {"template": "churn"}]
    (root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    ws = Workspace.open(root)
    return ws, train_project(ws)


def test_bundle_holds_every_action_and_loads_verified(trained: tuple[Workspace, TrainingResult]) -> None:
    ws, result = trained
    bundle = Registry(ws).load(result.bundle_id)
    assert sorted(bundle.actions) == ["buy_7d", "churn_30d"]
    m = bundle.manifest
    assert (
        m.feature_set_version.startswith("fs-") and m.code_version and m.training_set == result.training_set
    )
    info = m.actions["buy_7d"]
    assert info.feature_order == [f.name for f in ws.spec.features]
    assert {"first_cutoff", "last_cutoff", "test_start"} <= set(info.training_window)
    files = {p.name for p in (bundle.path / "buy_7d").iterdir()}
    kind = info.model_kind
    model_files = {
        "linear": {"linear.json"},
        "lightgbm": {"model.txt"},
        "blend": {"linear.json", "model.txt"},
    }
    assert files == {"model.json", "calibrator.json", "baseline.json", "baseline_calibrator.json",
                     "encoder.json", "evaluation"} | model_files[kind]  # fmt: skip
    assert {p.name for p in (bundle.path / "buy_7d" / "evaluation").iterdir()} == {
        "model.json", "calibrator.json"} | model_files[kind]  # fmt: skip
    assert not list(bundle.path.rglob("*.pkl"))
    # The bundle's evaluation model reproduces the recorded test metrics from the stored training set.
    table = __import__("pyarrow.parquet", fromlist=["x"]).read_table(
        ws.state_dir / "training" / result.training_set / "buy_7d.parquet"
    )
    test = table.filter(pc.equal(table.column("split"), "test"))
    assert (
        abs(bundle.predict("buy_7d", test, evaluation=True).mean() - info.metrics["model"]["mean_score"])
        < 1e-9
    )
    # Serving turns the served model's scores into percentiles with its scores' quantiles on the newest rows.
    p = bundle.predict("buy_7d", test)
    quantiles = info.score_quantiles or []
    assert len(quantiles) == 101 and quantiles == sorted(quantiles)
    assert quantiles[0] == pytest.approx(float(p.min())) and quantiles[-1] == pytest.approx(float(p.max()))
    codes = bundle.reason_codes("buy_7d", test.slice(0, 5), top=3)
    assert len(codes) == 5 and all(len(c) <= 3 for c in codes)
    assert all(c["feature"] in info.feature_order and c["direction"] in "+-" for row in codes for c in row)


def test_same_training_gives_the_same_content_addressed_bundle(
    trained: tuple[Workspace, TrainingResult],
) -> None:
    ws, result = trained
    again = train_project(ws, write_report=False)
    first, second = (Registry(ws).load(b).manifest for b in (result.bundle_id, again.bundle_id))
    assert first.files == second.files  # byte-identical models, calibrators and encoders
    # The id is the content's hash, so it is the same unless the code changed in between (a commit landed).
    assert (again.bundle_id == result.bundle_id) == (first.code_version == second.code_version)


def test_a_corrupted_bundle_is_refused(trained: tuple[Workspace, TrainingResult], tmp_path: Path) -> None:
    ws, result = trained
    import shutil

    copy = tmp_path / result.bundle_id
    shutil.copytree(ws.state_dir / "models" / result.bundle_id, copy)
    model = copy / "churn_30d" / "model.txt"
    if not model.exists():  # a linear champion
        model = copy / "churn_30d" / "linear.json"
    model.chmod(0o644)
    text = model.read_text()
    model.write_text(
        text.replace("leaf_value=", "leaf_value=1", 1).replace('"intercept":', '"intercept":1', 1)
    )
    with pytest.raises(CorruptBundleError, match=rf"churn_30d/{model.name} does not match its checksum"):
        load_bundle(copy)
    model.unlink()
    with pytest.raises(CorruptBundleError, match="is missing"):
        load_bundle(copy)
    manifest = copy / "bundle.json"
    manifest.chmod(0o644)
    data = json.loads(manifest.read_text())
    data["actions"]["buy_7d"]["metrics"]["model"]["roc_auc"] = 0.99
    manifest.write_text(json.dumps(data))
    with pytest.raises(CorruptBundleError, match="edited"):
        load_bundle(copy)


def test_promote_gate_force_and_rollback(trained: tuple[Workspace, TrainingResult]) -> None:
    ws, good = trained
    registry = Registry(ws)
    # Promoting from the CLI also compiles the bundle's trees, beside it, so no server start pays for that.
    compiled = registry.path(good.bundle_id) / "compiled"
    shutil.rmtree(compiled, ignore_errors=True)
    out = subprocess.run(
        [sys.executable, "-m", "propensity", "models", "promote", good.bundle_id, "-w", str(ws.root)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "compiled the scorer" in out.stdout, out.stdout + out.stderr
    assert len(list(compiled.glob("pf-*.so"))) == 1
    assert registry.production() == good.bundle_id
    # A much weaker candidate: LightGBM only, stumps and a handful of rounds.
    weak_ws = _set_training(
        ws, models={"candidates": ["lightgbm"], "backtest_folds": 1}, seed=1,
        lightgbm={"search": False, "max_rounds": 2, "num_leaves": 2, "early_stopping_rounds": 1},
    )  # fmt: skip
    weak = train_project(weak_ws, write_report=False)
    assert weak.bundle_id != good.bundle_id
    with pytest.raises(PromotionRefusedError, match=r"worse than production .* roc_auc: candidate"):
        promote(weak_ws, weak.bundle_id)
    assert registry.production() == good.bundle_id
    with pytest.raises(RegistryError, match="needs --reason"):
        promote(weak_ws, weak.bundle_id, force=True)
    gate = promote(weak_ws, weak.bundle_id, force=True, reason="testing the override")
    assert not gate.passed and all(c.basis == "same test window" for c in gate.checks)
    assert registry.production() == weak.bundle_id
    last = registry.history()[-1]
    assert last["forced"] is True and last["reason"] == "testing the override"
    stages = {e.id: e.stage for e in registry.entries()}
    assert stages == {good.bundle_id: "archived", weak.bundle_id: "production"}
    assert registry.rollback() == (weak.bundle_id, good.bundle_id)
    assert registry.production() == good.bundle_id
    assert {e.id: e.stage for e in registry.entries()} == {
        good.bundle_id: "production",
        weak.bundle_id: "archived",
    }
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        registry.rollback()
    _set_training(ws)


def test_cli_models_and_report(trained: tuple[Workspace, TrainingResult]) -> None:
    ws, result = trained
    env = {**os.environ, "COLUMNS": "200"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "propensity", *args, "-w", str(ws.root)],
            capture_output=True,
            text=True,
            env=env,
        )

    out = cli("models", "list")
    assert out.returncode == 0 and result.bundle_id in out.stdout
    out = cli("models", "show", result.bundle_id[:8])
    assert out.returncode == 0 and "buy_7d" in out.stdout and "AUC" in out.stdout
    out = cli("report", "--bundle", result.bundle_id)
    assert out.returncode == 0
    html = (ws.state_dir / "reports" / f"report-{result.bundle_id}.html").read_text()
    assert (
        "<svg" in html
        and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
        and "<script" not in html
    )
    data = json.loads((ws.state_dir / "reports" / f"report-{result.bundle_id}.json").read_text())
    for action in ("buy_7d", "churn_30d"):
        for kind in ("model", "baseline"):
            assert set(data[action][kind]) == {
                "roc_auc",
                "pr_auc",
                "log_loss",
                "brier",
                "ece",
                "lift_top_decile",
            }
        assert "oracle_roc_auc" in data[action] and "oracle_ece" in data[action]
    out = cli("models", "promote", "m-nope")
    assert out.returncode == 1 and "matches no bundle" in out.stderr and "Traceback" not in out.stderr
