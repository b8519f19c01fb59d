"""What users and machines read: stored runs, Prometheus gauges, the scheduler, the report and the CLI."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta
from pathlib import Path

from tests.monitoring.drift_project import END
from typer.testing import CliRunner

from propensity.cli.app import app
from propensity.events.log import DuckDBEventLog
from propensity.monitoring.gauges import MonitorScheduler, render_gauges
from propensity.monitoring.report import write_report
from propensity.monitoring.runner import run_monitors
from propensity.monitoring.store import MonitorRun, load_runs
from propensity.workspace import Workspace

SAMPLE = re.compile(r'^propensity_[a-z0-9_]+\{[a-z]+="[^"]*"(,[a-z]+="[^"]*")*\} (-?[0-9.e+-]+|NaN|\+Inf)$')


def _stored(ws: Workspace) -> list[MonitorRun]:
    with ws.write_lock(), DuckDBEventLog(ws.db_path).connection() as con:
        return load_runs(con)


def test_runs_are_stored_and_read_back_unchanged(broken_workspace: Workspace) -> None:
    run = run_monitors(broken_workspace, as_of=END, send_alerts=False)
    back = next(r for r in _stored(broken_workspace) if r.run_id == run.run_id)
    assert back.status == run.status == "alert"
    assert [(r.name, r.subject, r.status) for r in back.results] == [
        (r.name, r.subject, r.status) for r in run.results
    ]
    assert back.result("volume", "crm").details["direction"] == "drop"  # type: ignore[union-attr]


def test_gauges_are_valid_exposition_lines(broken_workspace: Workspace) -> None:
    run = run_monitors(broken_workspace, as_of=END, store=False, send_alerts=False)
    text = render_gauges(run)
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert samples and all(
        SAMPLE.match(line) or line.startswith("propensity_monitor_last_run") for line in samples
    )
    assert 'propensity_monitor_status{monitor="volume",subject="crm"} 2' in samples
    assert any(line.startswith('propensity_feature_psi{feature="spend_30d"} ') for line in samples)
    assert any(line.startswith('propensity_freshness_silence_hours{source="web"} ') for line in samples)
    assert render_gauges(None) == ""


def test_scheduler_runs_on_its_interval_and_survives_a_failing_run(quiet_workspace: Workspace) -> None:
    calls: list[float] = []

    def flaky(ws: Workspace) -> MonitorRun:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("event log unavailable")
        return run_monitors(ws, as_of=END, store=False, send_alerts=False)

    scheduler = MonitorScheduler(quiet_workspace, interval_s=0.05, run=flaky)
    scheduler.start()
    deadline = time.monotonic() + 30
    while scheduler.runs < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    scheduler.stop()
    assert scheduler.failures == 1 and scheduler.runs >= 2
    assert 'propensity_monitor_status{monitor="volume",subject="web"} 0' in scheduler.gauges()


def test_report_is_self_contained_with_every_section(tmp_path: Path, broken_workspace: Workspace) -> None:
    run_monitors(broken_workspace, as_of=END, send_alerts=False)
    runs = _stored(broken_workspace)
    paths = write_report(tmp_path, runs, project="drift")
    page = paths["html"].read_text()
    assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    for heading in ("Latest results", "Feature drift over time", "Freshness and volume over time"):
        assert heading in page
    assert page.count("<svg") >= 5
    data = json.loads(paths["json"].read_text())
    assert data["latest"]["run_id"] == runs[-1].run_id and len(data["history"]) == len(runs)
    crm = {(v["name"], v["subject"]): v["status"] for v in data["history"][-1]["values"]}
    assert crm[("freshness_silence", "crm")] == "alert"


def test_cli_exit_code_is_1_only_when_an_alert_fires(
    quiet_workspace: Workspace, broken_workspace: Workspace
) -> None:
    cli = CliRunner()
    quiet = cli.invoke(app, ["monitor", "-w", str(quiet_workspace.root), "--as-of", END.isoformat()])
    assert quiet.exit_code == 0, quiet.output
    assert "0 alert(s), 0 warning(s)" in quiet.output
    broken = cli.invoke(
        app, ["monitor", "-w", str(broken_workspace.root), "--as-of", END.isoformat(), "--json"]
    )
    assert broken.exit_code == 1
    data = json.loads(next(line for line in broken.stdout.splitlines() if line.startswith("{")))
    assert data["status"] == "alert"
    bad = cli.invoke(app, ["monitor", "-w", str(quiet_workspace.root), "--as-of", "last tuesday"])
    assert bad.exit_code == 2 and "ISO 8601" in bad.output


def test_cli_report_writes_html_and_json(tmp_path: Path, quiet_workspace: Workspace) -> None:
    run_monitors(quiet_workspace, as_of=END, send_alerts=False)
    result = CliRunner().invoke(
        app, ["monitor", "report", "-w", str(quiet_workspace.root), "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "monitoring.html").exists() and json.loads((tmp_path / "monitoring.json").read_text())[
        "latest"
    ]


def test_report_written_with_a_run_shows_that_run_even_when_backfilling(
    tmp_path: Path, quiet_workspace: Workspace
) -> None:
    run_monitors(quiet_workspace, as_of=END, send_alerts=False)
    earlier = END - timedelta(days=7)
    args = [
        "monitor",
        "-w",
        str(quiet_workspace.root),
        "--as-of",
        earlier.isoformat(),
        "--report",
        str(tmp_path),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "monitoring.json").read_text())
    assert datetime.fromisoformat(data["latest"]["as_of"]) == earlier
    assert [h["as_of"] for h in data["history"]] == sorted(
        h["as_of"] for h in data["history"]
    )  # plotted in time order


def test_latest_stored_run_renders_without_a_scheduler(tmp_path: Path, broken_workspace: Workspace) -> None:
    from propensity.monitoring.gauges import render_latest

    backfill = run_monitors(broken_workspace, as_of=END - timedelta(days=30), send_alerts=False)  # made last
    text = render_latest(broken_workspace)
    assert f"propensity_monitor_last_run_timestamp_seconds {backfill.finished_at.timestamp():.3f}" in text
    empty = Workspace.open(tmp_path)
    assert render_latest(empty) == ""


def test_an_empty_event_log_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "propensity.yaml").write_text("project: empty\n")
    result = CliRunner().invoke(app, ["monitor", "-w", str(tmp_path)])
    assert result.exit_code == 1
    assert "the event log is empty" in str(result.exception) + result.output
