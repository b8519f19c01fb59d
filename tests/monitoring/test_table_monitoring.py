"""A labelled table's bundle is monitored as any other: `propensity monitor` on a workspace with no events, whose
production bundle came from `train --table` and whose score runs from `score --rows`, measures feature drift of
the scored rows against the training rows, score drift and CBPE against the bundle's scores, and calibration and
AUC once the rows carry their outcomes; a shifted batch of rows is flagged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from propensity.cli.app import app
from propensity.registry.registry import Registry
from propensity.registry.train import train_table
from propensity.workspace import Workspace

RUNNER = CliRunner()


def _sessions(n: int, seed: int, *, shift: float = 0.0, city: str | None = None) -> pa.Table:
    """Sessions whose purchase depends on pages and city; ``shift`` moves pages, ``city`` fixes every city."""
    rng = np.random.default_rng(seed)
    pages = rng.normal(size=n) + shift
    cities = np.full(n, city) if city else rng.choice(["Oslo", "Rome", "Lima"], size=n)
    y = rng.random(n) < 1 / (1 + np.exp(-(1.5 * pages + (cities == "Rome"))))
    return pa.table({"session_id": np.arange(n), "pages": pages, "city": cities, "weekend": rng.random(n) < 0.3,
                     "Revenue": np.where(y, "TRUE", "FALSE")})  # fmt: skip


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, str]:
    root = tmp_path_factory.mktemp("shop")
    (root / "propensity.yaml").write_text("project: shop\n", encoding="utf-8")
    ws = Workspace.open(root)
    result = train_table(
        ws, _sessions(3000, 0), name="sessions", id_column="session_id", label="Revenue", folds=3
    )
    Registry(ws).set_production(result.bundle_id, forced=True, reason="test")
    return ws, result.bundle_id


def _score_then_monitor(ws: Workspace, rows: pa.Table, path: Path) -> dict[str, dict[str, object]]:
    pq.write_table(rows, path)
    out = RUNNER.invoke(app, ["score", "--rows", str(path), "--json", "-w", str(ws.root)])
    assert out.exit_code == 0, out.output
    out = RUNNER.invoke(app, ["monitor", "--json", "-w", str(ws.root)])
    assert out.exit_code in (0, 1), out.output  # 1: alerts fired (documented)
    run = json.loads(out.stdout.strip().splitlines()[-1])  # stderr may hold the alert log lines
    return {f"{r['name']}:{r['subject']}": r for r in run["results"]}


def test_rows_like_the_training_rows_are_monitored_and_calm(
    shop: tuple[Workspace, str], tmp_path: Path
) -> None:
    ws, _ = shop
    results = _score_then_monitor(ws, _sessions(2000, 7), tmp_path / "same.parquet")
    # Feature drift for every feature the table gave, score drift and CBPE, and, as the rows carry the label,
    # calibration and the AUC against the bundle's test AUC.
    for key in ("feature_psi:pages", "feature_ks:pages", "feature_psi:city", "feature_psi:weekend",
                "null_rate:pages", "score_psi:sessions", "expected_auc_drop:sessions",
                "calibration_ece:sessions", "auc_drop:sessions"):  # fmt: skip
        assert key in results, sorted(results)
    for key in ("feature_psi:pages", "feature_psi:city", "score_psi:sessions", "calibration_ece:sessions"):
        assert results[key]["status"] == "ok", results[key]
    assert results["calibration_ece:sessions"]["details"]["periods"][0]["n"] == 2000


def test_shifted_rows_are_flagged(shop: tuple[Workspace, str], tmp_path: Path) -> None:
    ws, _ = shop
    # New rows without their outcomes yet: drift is measured, calibration waits for the label.
    rows = _sessions(2000, 8, shift=2.0, city="Lima").drop(["Revenue"])
    results = _score_then_monitor(ws, rows, tmp_path / "shifted.parquet")
    assert results["feature_psi:pages"]["status"] == "alert", results["feature_psi:pages"]
    assert results["feature_psi:city"]["status"] == "alert", results["feature_psi:city"]
    assert results["score_psi:sessions"]["status"] == "alert", results["score_psi:sessions"]
    assert results["feature_psi:weekend"]["status"] == "ok"
    assert "calibration_ece:sessions" not in results
