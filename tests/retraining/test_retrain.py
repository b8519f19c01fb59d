"""Retraining: a better challenger is promoted, a worse one refused, and both decisions are recorded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from tests.retraining.conftest import train_full, train_weak
from typer.testing import CliRunner

from propensity.cli.app import app
from propensity.events.clock import DataClock
from propensity.events.log import DuckDBEventLog
from propensity.registry.registry import Registry
from propensity.retraining.history import history
from propensity.retraining.retrain import NOT_DUE, PROMOTED, REFUSED, UNCHANGED, retrain
from propensity.workspace import Workspace


@pytest.mark.slow
def test_better_challenger_is_promoted_worse_is_refused_and_both_are_recorded(retrain_root: Path) -> None:
    """Acceptance: a retrain that would be worse is refused by the gate; a better one is promoted; both
    decisions are recorded (JSON file, table row, and the registry's history for the promotion)."""
    ws = Workspace.open(retrain_root)
    registry = Registry(ws)
    weak = train_weak(ws)
    registry.set_production(weak, forced=True, reason="test: a deliberately weak production model")

    better = retrain(ws, force=True, train=train_full)
    assert better.outcome == PROMOTED and better.promoted
    assert registry.production() == better.challenger != weak
    m = better.metrics["buy_7d"]
    assert m["challenger"]["roc_auc"] > m["production"]["roc_auc"] + 0.1
    assert better.window["buy_7d"]["rows"] > 0 and better.window["buy_7d"]["positives"] > 0
    # The window is the latest matured one and no longer than retraining.window (28d) allows.
    w = better.window["buy_7d"]
    span = datetime.fromisoformat(w["last_cutoff"]) - datetime.fromisoformat(w["first_cutoff"])
    assert span < timedelta(days=28)
    # ...and matured: its last cutoff's label window closed by the newest event in the log (tests/labels/
    # test_maturity.py checks the training path that builds it on random logs).
    newest = DataClock.read(ws).newest_event
    buy = next(a for a in ws.spec.actions if a.name == "buy_7d")
    assert newest is not None and datetime.fromisoformat(w["last_cutoff"]) + buy.span.timedelta <= newest

    worse = retrain(ws, force=True, train=train_weak)
    assert worse.outcome == REFUSED and not worse.promoted
    assert registry.production() == better.challenger  # unchanged
    failing = {(c["action"], c["metric"]) for c in worse.checks if not c["passed"]}
    assert ("buy_7d", "roc_auc") in failing
    # Both bundles were scored on the same rows: the worse run's numbers mirror the better run's.
    assert worse.metrics["buy_7d"]["production"]["roc_auc"] == pytest.approx(m["challenger"]["roc_auc"])

    recorded = history(ws)
    assert [(r["id"], r["outcome"]) for r in recorded] == [(better.id, PROMOTED), (worse.id, REFUSED)]
    for r in recorded:
        assert set(r["metrics"]["buy_7d"]) == {"challenger", "production"} and r["window"]["buy_7d"]["rows"]
        on_disk = json.loads((ws.state_dir / "retraining" / f"{r['id']}.json").read_text())
        assert on_disk == r
    promotion = [
        e for e in registry.history() if e["event"] == "promote" and e["bundle"] == better.challenger
    ]
    assert promotion and better.id in promotion[-1]["reason"]

    # Retraining on unchanged data reproduces the production bundle: nothing to promote, still recorded.
    same = retrain(ws, force=True, train=train_full, dry_run=True)
    assert same.outcome == UNCHANGED and not same.promoted
    assert len(history(ws)) == 3

    runner = CliRunner()
    out = runner.invoke(app, ["retrain", "history", "-w", str(retrain_root), "--json"])
    assert out.exit_code == 0, out.output
    listed = json.loads(out.stdout)
    assert [r["outcome"] for r in listed] == [PROMOTED, REFUSED, UNCHANGED]
    out = runner.invoke(app, ["retrain", "history", "-w", str(retrain_root)], env={"COLUMNS": "200"})
    assert out.exit_code == 0 and "refused" in out.stdout and "promoted" in out.stdout

    # On a schedule: the last (non-dry-run) retrain is minutes old, so a 7-day schedule trains nothing.
    out = runner.invoke(app, ["retrain", "-w", str(retrain_root), "--every", "7d", "--iterations", "1"])
    assert out.exit_code == 0, out.output
    assert len(history(ws)) == 3
    out = runner.invoke(app, ["retrain", "-w", str(retrain_root), "--every", "7 days"])
    assert out.exit_code == 1 and "--every" in str(out.exception)


@pytest.mark.slow
def test_cli_retrain_exits_1_when_the_gate_refuses(retrain_root: Path, tmp_path: Path) -> None:
    # A copy whose production is the full model and whose "training" removes features (by spec).
    import shutil

    root = tmp_path / "ws"
    shutil.copytree(retrain_root, root)
    ws = Workspace.open(root)
    registry = Registry(ws)
    full = train_full(ws)
    if registry.production() != full:
        registry.set_production(full, forced=True, reason="test")
    spec = yaml.safe_load((root / "propensity.yaml").read_text())
    spec["features"] = [f for f in spec["features"] if f["name"] == "region"]
    (root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    out = CliRunner().invoke(app, ["retrain", "-w", str(root)], env={"COLUMNS": "200"})
    assert out.exit_code == 1, out.output
    assert "refused" in out.output
    assert Registry(Workspace.open(root)).production() == full


def _workspace(tmp_path: Path, retraining: dict[str, object]) -> Workspace:
    (tmp_path / "propensity.yaml").write_text(yaml.safe_dump({"retraining": retraining}))
    return Workspace.open(tmp_path)


def _never_called(ws: Workspace) -> str:
    raise AssertionError("training ran although no retrain was due")


def test_nothing_due_means_no_training_and_no_record(tmp_path: Path) -> None:
    ws = _workspace(tmp_path, {"on_drift_alert": True})
    decision = retrain(ws, train=_never_called)
    assert decision.outcome == NOT_DUE and history(ws) == []
    out = CliRunner().invoke(app, ["retrain", "-w", str(tmp_path), "--if-due"])
    assert out.exit_code == 0 and "Not due" in out.stdout
    out = CliRunner().invoke(app, ["retrain", "-w", str(tmp_path), "--schedule"])
    assert out.exit_code == 1 and "retraining.every" in str(out.exception)


def test_a_drift_alert_in_the_latest_monitoring_run_makes_a_retrain_due(tmp_path: Path) -> None:
    from propensity.retraining.retrain import due

    ws = _workspace(tmp_path, {"on_drift_alert": True})
    t = datetime(2026, 11, 20, tzinfo=UTC)
    with DuckDBEventLog(ws.db_path).connection() as con:
        con.execute("CREATE TABLE monitor_runs (run_id VARCHAR, as_of TIMESTAMPTZ, started_at TIMESTAMPTZ, "
                    "finished_at TIMESTAMPTZ, bundle_id VARCHAR, status VARCHAR, notes VARCHAR)").fetchall()  # fmt: skip
        con.execute("CREATE TABLE monitor_results (run_id VARCHAR, name VARCHAR, subject VARCHAR, value DOUBLE, "
                    "warning DOUBLE, alert DOUBLE, status VARCHAR, details VARCHAR)").fetchall()  # fmt: skip
        con.execute("INSERT INTO monitor_runs VALUES ('m1', ?, ?, ?, 'b', 'ok', '[]')", [t, t, t]).fetchall()
    assert due(ws) is None
    later = t + timedelta(days=1)
    with DuckDBEventLog(ws.db_path).connection() as con:
        con.execute(
            "INSERT INTO monitor_runs VALUES ('m2', ?, ?, ?, 'b', 'alert', '[]')", [later] * 3
        ).fetchall()
        con.execute(
            "INSERT INTO monitor_results VALUES ('m2', 'psi', 'feature:pv_7d', 0.4, 0.1, 0.25, 'alert', '{}')"
        ).fetchall()
    reason = due(ws)
    assert reason is not None and "m2" in reason and "psi on feature:pv_7d" in reason


def test_schedule_and_drift_rules() -> None:
    from propensity.retraining.triggers import schedule_due, should_retrain

    now = datetime(2026, 11, 23, tzinfo=UTC)
    week = timedelta(days=7)
    assert schedule_due(week, None, now) is not None
    assert schedule_due(week, now - timedelta(days=6), now) is None
    assert schedule_due(week, now - week, now) is not None
    alert = {
        "run_id": "m9",
        "status": "alert",
        "finished_at": now,
        "alerts": [{"name": "psi", "subject": "score"}],
    }
    assert should_retrain(None) is None
    assert should_retrain({**alert, "status": "warning", "alerts": []}) is None
    assert should_retrain(alert) is not None
    # One alert triggers one retrain: not again once a retrain has happened after it.
    assert should_retrain(alert, since=now + timedelta(minutes=1)) is None
