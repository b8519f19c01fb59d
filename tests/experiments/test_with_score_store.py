"""With the real pipeline: a trained workspace, a scoring run written to the score store with holdout groups,
then `propensity experiments report` reading that run."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.training.synthetic_project import trained_workspace
from typer.testing import CliRunner

from propensity.cli.app import app
from propensity.scoring.batch import score_and_store


@pytest.mark.slow
def test_report_reads_the_latest_scoring_run(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    ws = trained_workspace(
        root, customers=400, days=150, seed=3,
        spec={"actions": [{"template": "buy"}], "experiments": {"holdouts": [{"name": "summer", "control_share": 0.25}]}},
    )  # fmt: skip
    # A backfilled run: scores as of three weeks before the data ends, so its 7-day outcomes have matured.
    scored = score_and_store(ws, as_of=datetime(2025, 5, 12, tzinfo=UTC))
    assert set(scored.rows.column("holdout_group").to_pylist()) == {"control", "treatment"}

    out = CliRunner().invoke(app, ["experiments", "report", "-w", str(root)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    data = json.loads((ws.state_dir / "reports" / "experiments.json").read_text())
    entry = data["actions"]["buy_7d"]
    eligible = sum(scored.rows.column("eligible").to_pylist())
    assert entry["experiment"] == "summer" and entry["matured_rows"] == eligible > 0
    lift = entry["lift"]["(all)"]
    assert lift["n_treated"] + lift["n_control"] == eligible
    # The synthetic data plants no treatment effect; the point here is that rows, groups and outcomes flow
    # from the store into the report.
    assert lift["absolute_ci"] is not None and lift["absolute_ci"][0] < lift["absolute_ci"][1]
    assert data["_meta"]["scoring_run"] == scored.run.run_id
