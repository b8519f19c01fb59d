"""Scores for analysis: ``propensity score --as-of T --out`` (contract-checked, never stored or gated) and
``--triggers`` (every send of a period, each as of its own send time, with trigger_id); every row has its as_of."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from tests.scoring.conftest import AS_OF
from typer.testing import CliRunner

from propensity.activation.gates import run_gates
from propensity.cli.app import app
from propensity.config.destinations import GateSettings
from propensity.core.contract import ContractError, validate_rows
from propensity.core.score_row import UTC_US
from propensity.events.log import connect
from propensity.labels.labels import build_labels
from propensity.scoring.batch import BatchResult, score_batch, write_scores_file
from propensity.scoring.score_store import open_score_store
from propensity.workspace import Workspace

cli = CliRunner()


def invoke(*args: str) -> str:
    result = cli.invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_score_as_of_out_writes_checked_rows_and_stores_nothing(
    scoring_workspace: Workspace, tmp_path: Path
) -> None:
    store = open_score_store(scoring_workspace)
    runs_before = [r.run_id for r in store.runs()]
    day = (
        (AS_OF - timedelta(days=10)).date().isoformat()
    )  # a date alone: midnight in the project's zone (UTC)
    out = tmp_path / "scores.parquet"
    invoke("score", "-w", str(scoring_workspace.root), "--as-of", day, "--out", str(out))
    rows = pq.read_table(out)
    assert validate_rows(rows) == []
    assert set(rows.column("as_of").to_pylist()) == {AS_OF - timedelta(days=10)}
    assert rows.column("trigger_id").null_count == rows.num_rows
    record = json.loads(out.with_name(out.name + ".run.json").read_text())
    assert record["contract_version"] == "2.0.0" and record["rows"] == rows.num_rows
    assert [r.run_id for r in store.runs()] == runs_before  # not stored, so nothing can be published from it
    # The gates would have blocked this run against a previous one with half the rows: it was written anyway.
    half = rows.filter(pc.less(rows.column("customer_id"), "c2"))
    assert run_gates(rows, half, GateSettings(), run_id="r").blocked


def test_a_date_only_as_of_is_midnight_in_the_projects_time_zone(
    scoring_workspace: Workspace, tmp_path: Path
) -> None:
    # The same project declared in New York: `--as-of 2025-04-20` is 04:00 UTC that day (EDT), not 00:00 UTC.
    root = tmp_path / "ny"
    shutil.copytree(scoring_workspace.root, root)
    spec = yaml.safe_load((root / "propensity.yaml").read_text())
    spec["timezone"] = "America/New_York"
    (root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    day = (AS_OF - timedelta(days=10)).date()
    out = tmp_path / "scores.parquet"
    invoke("score", "-w", str(root), "--as-of", day.isoformat(), "--out", str(out))
    local_midnight = datetime.combine(day, datetime.min.time(), ZoneInfo("America/New_York"))
    assert set(pq.read_table(out).column("as_of").to_pylist()) == {local_midnight.astimezone(UTC)}
    assert local_midnight.utcoffset() != timedelta(0)


def test_a_file_of_rows_that_break_the_contract_is_never_written(
    scoring_workspace: Workspace, tmp_path: Path
) -> None:
    result = score_batch(scoring_workspace, as_of=AS_OF, actions=["buy_7d"])
    bad = result.rows.set_column(
        result.rows.column_names.index("as_of"), "as_of", pa.nulls(result.rows.num_rows, UTC_US)
    )
    with pytest.raises(ContractError, match="as_of"):
        write_scores_file(BatchResult(result.run, bad), tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists()


@pytest.fixture(scope="module")
def respond_workspace(scoring_workspace: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The scoring workspace with respond_7d declared too (not in the bundle: scored by the fallback)."""
    root = tmp_path_factory.mktemp("respond")
    shutil.copytree(scoring_workspace.root, root, dirs_exist_ok=True)
    spec = yaml.safe_load((root / "propensity.yaml").read_text())
    spec["actions"].append({"template": "respond"})
    (root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return Workspace.open(root)


def test_score_triggers_scores_each_send_as_of_its_own_time(
    respond_workspace: Workspace, tmp_path: Path
) -> None:
    lo, hi = AS_OF - timedelta(days=21), AS_OF - timedelta(days=7)
    out = tmp_path / "sends.parquet"
    text = invoke("score", "-w", str(respond_workspace.root), "--triggers", "--from", lo.isoformat(),
                  "--to", hi.isoformat(), "--out", str(out))  # fmt: skip
    assert "sends scored" in text
    rows = pq.read_table(out)
    assert validate_rows(rows) == [] and set(rows.column("action").to_pylist()) == {"respond_7d"}
    con = connect(respond_workspace.db_path, read_only=True)
    try:
        sends = build_labels(
            con,
            respond_workspace.spec.action("respond_7d"),
            [lo],
            until=hi,
            data_end=hi + timedelta(days=999),
        )
        events = dict(con.execute("SELECT event_id, greatest(event_time, available_at) FROM events "
                                  "WHERE event_type = 'campaign_sent'").fetchall())  # fmt: skip
    finally:
        con.close()
    assert rows.num_rows == sends.num_rows > 20
    assert sorted(rows.column("trigger_id").to_pylist()) == sorted(sends.column("trigger_id").to_pylist())
    for r in rows.select(["trigger_id", "as_of"]).to_pylist():
        assert r["as_of"] == events[r["trigger_id"]] and lo <= r["as_of"] < hi
    assert all(rows.column("fallback").to_pylist())  # respond_7d is not in the bundle
    with pytest.raises(AssertionError, match="no trigger"):
        invoke(
            "score", "-w", str(respond_workspace.root), "--triggers", "--from", lo.isoformat(), "-a", "buy_7d"
        )
