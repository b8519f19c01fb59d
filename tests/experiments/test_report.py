"""The experiment report end to end: score rows + the event log → outcomes → lift per segment → HTML and JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from tests.experiments.eventlog import make_workspace, score_rows
from typer.testing import CliRunner

from propensity.cli.app import app
from propensity.config.experiments import Holdout
from propensity.core.holdout import group
from propensity.experiments.report import experiment_report, write_report
from propensity.workspace import Workspace

T = datetime(2026, 3, 2, tzinfo=UTC)
RATE = {"treatment": 0.40, "control": 0.20}  # the planted effect: +20 points
HOLDOUT = {"name": "spring", "control_share": 0.3, "actions": ["buy_7d"]}


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Path]:
    rng = np.random.default_rng(4)
    holdout = Holdout.model_validate(HOLDOUT)
    ids = [f"cust-{i}" for i in range(800)]
    events, rows = [], []
    for c in ids:
        g = group(c, holdout)
        events.append((c, "page_view", T - timedelta(days=int(rng.integers(1, 20)))))
        if rng.random() < RATE[g]:
            events.append((c, "purchase", T + timedelta(hours=float(rng.uniform(1, 160)))))
        segment = "high" if rng.random() < 0.5 else "low"
        rows.append(
            {"customer_id": c, "action": "buy_7d", "scored_at": T, "holdout_group": g, "segment": segment}
        )
        # churn is scored too but is not part of the experiment: it must be left out of the report.
        rows.append({"customer_id": c, "action": "churn_30d", "scored_at": T})
    events.append(("zz", "page_view", T + timedelta(days=40)))
    root = tmp_path_factory.mktemp("report")
    ws = make_workspace(
        root / "ws", events,
        actions=[{"template": "buy"}, {"template": "churn"}],
        features=[{"name": "pv_30d", "aggregate": "count", "event_type": "page_view", "window": "30d"}],
        experiments={"holdouts": [HOLDOUT]},
    )  # fmt: skip
    path = root / "rows.parquet"
    pq.write_table(score_rows(rows), path)
    return ws, path


def test_report_measures_the_planted_lift(planted: tuple[Workspace, Path]) -> None:
    ws, path = planted
    data = experiment_report(ws, pq.read_table(path), run_id="r-test")
    assert list(data["actions"]) == ["buy_7d"] and data["_meta"]["not_covered"] == ["churn_30d"]
    entry = data["actions"]["buy_7d"]
    assert entry["experiment"] == "spring" and entry["matured_rows"] == entry["scored_rows"] == 800
    overall = entry["lift"]["(all)"]
    truth = RATE["treatment"] - RATE["control"]
    assert overall["absolute_ci"][0] <= truth <= overall["absolute_ci"][1]
    assert overall["absolute_ci"][0] > 0
    assert overall["n_control"] + overall["n_treated"] == 800
    assert abs(overall["n_control"] / 800 - 0.3) < 0.05
    assert set(entry["lift"]) == {"(all)", "high", "low"}
    assert "qini" in entry["uplift"] or "skipped" in entry["uplift"]
    paths = write_report(ws, data)
    page = paths["html"].read_text()
    assert "<svg" in page and "spring" in page and "<script" not in page
    assert json.loads(paths["latest_json"].read_text()) == json.loads(json.dumps(data))


def test_cli_report_from_a_rows_file(planted: tuple[Workspace, Path], tmp_path: Path) -> None:
    ws, path = planted
    out = CliRunner().invoke(
        app,
        ["experiments", "report", "-w", str(ws.root), "--rows", str(path), "--out", str(tmp_path / "lift"),
         "--no-uplift"],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "buy_7d" in out.stdout and "high" in out.stdout
    data = json.loads((tmp_path / "lift.json").read_text())
    assert "uplift" not in data["actions"]["buy_7d"]
    assert (tmp_path / "lift.html").exists()


def test_cli_list_shows_the_experiments(planted: tuple[Workspace, Path]) -> None:
    ws, _ = planted
    out = CliRunner().invoke(app, ["experiments", "list", "-w", str(ws.root)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "spring" in out.stdout and "0.3" in out.stdout and "no scoring run yet" in out.stdout
    out = CliRunner().invoke(app, ["experiments", "list", "--json", "-w", str(ws.root)])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["holdouts"][0]["name"] == "spring" and data["holdouts"][0]["control_share"] == 0.3


def test_cli_rows_that_break_the_score_contract_are_refused(tmp_path: Path) -> None:
    """Hand-made rows (an arm and an outcome, no score contract) used to give a report silently; now the error
    names what is missing and points at `experiments import`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "made.parquet"
    pq.write_table(pa.table({"customer_id": ["a", "b"], "arm": ["t", "c"], "converted": [1, 0]}), path)
    (tmp_path / "propensity.yaml").write_text("project: x\n")
    out = CliRunner().invoke(app, ["experiments", "report", "-w", str(tmp_path), "--rows", str(path)],
                             env={"COLUMNS": "300"})  # fmt: skip
    assert out.exit_code != 0
    text = " ".join(out.output.split())
    assert "does not keep the score row contract" in text and "missing column(s)" in text
    assert "experiments import" in text
