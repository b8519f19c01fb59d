"""`propensity score --rows`: a labelled table's bundle scores new rows that carry its features."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from propensity.cli.app import app
from propensity.core.contract import validate_rows
from propensity.registry.train import train_table
from propensity.scoring.score_store import open_score_store
from propensity.scoring.supplied import SuppliedRowsError, score_supplied
from propensity.workspace import Workspace

RUNNER = CliRunner()


def _table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    city = rng.choice(["Oslo", "Rome", "Lima"], size=n)
    y = rng.random(n) < 1 / (1 + np.exp(-(1.5 * x + (city == "Rome"))))
    return pa.table({"session_id": np.arange(n), "pages": x, "city": city, "weekend": rng.random(n) < 0.3,
                     "Revenue": np.where(y, "TRUE", "FALSE")})  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, str, Any]:
    root = tmp_path_factory.mktemp("shop")
    ws = Workspace.open(root)
    result = train_table(
        ws, _table(1500, 0), name="sessions", id_column="session_id", label="Revenue", folds=3
    )
    return ws, result.bundle_id, result.fit


def test_rows_are_scored_as_the_final_model_scores_them(trained: tuple[Workspace, str, Any]) -> None:
    ws, bundle, fit = trained
    new = _table(50, 9).drop(["Revenue"])
    result, ignored = score_supplied(ws, new, bundle=bundle)
    assert ignored == [] and validate_rows(result.rows) == []
    assert result.rows.column("customer_id").to_pylist() == [str(i) for i in range(50)]  # ids from session_id
    f = fit.final
    x = f.encoder.matrix(pa.table({"pages": new.column("pages"), "city": new.column("city"),
                                   "weekend": new.column("weekend")}))  # fmt: skip
    expected = f.calibrator(f.booster.raw(x))
    assert result.rows.column("score").to_numpy() == pytest.approx(expected, abs=1e-9)


def test_cli_scores_a_csv_into_the_store_and_a_file(
    trained: tuple[Workspace, str, Any], tmp_path: Path
) -> None:
    ws, bundle, _ = trained
    path = tmp_path / "new.csv"
    pacsv.write_csv(_table(20, 4).drop(["Revenue"]).append_column("note", pa.array(["x"] * 20)), path)
    out = RUNNER.invoke(app, ["score", "--rows", str(path), "--bundle", bundle, "--out", str(tmp_path / "s.parquet"),
                              "-w", str(ws.root)], env={"COLUMNS": "200"})  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "note" in out.output  # an ignored column is listed
    written = pq.read_table(tmp_path / "s.parquet")
    assert written.num_rows == 20
    run = open_score_store(ws).latest_run()
    assert run is not None and run.rows == 20 and run.details["supplied_rows"]
    # for scripts: the run as JSON, and the runs listed as JSON
    out = RUNNER.invoke(app, ["score", "--rows", str(path), "--bundle", bundle, "--json", "-w", str(ws.root)])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["rows"] == 20 and data["ignored_columns"] == ["note"]
    out = RUNNER.invoke(app, ["score-runs", "--json", "-n", "1", "-w", str(ws.root)])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)[0]["run_id"] == data["run_id"]


def test_rows_that_do_not_fit_are_refused_naming_columns_and_rows(
    trained: tuple[Workspace, str, Any],
) -> None:
    ws, bundle, _ = trained
    bad = pa.table({"pages": ["1.5", "lots", "2"], "city": ["Oslo", "Rome", "Oslo"]})
    with pytest.raises(SuppliedRowsError) as err:
        score_supplied(ws, bad, bundle=bundle)
    text = str(err.value)
    assert "missing feature column(s): weekend" in text
    assert "pages: 1 value(s) are not a number (row 2: 'lots')" in text
    assert json.dumps(text)
