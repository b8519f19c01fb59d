"""Acceptance: a workspace whose data ended ten days ago. On the wall clock, `score` warns, `activate` refuses the
run naming the newest event's time, and `monitor` ranks the freshness alert first with the drift it causes
grouped under it; with `clock: data` the same workspace scores, publishes and monitors cleanly."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from tests.training.synthetic_project import spec_dict
from typer.testing import CliRunner

from propensity.cli.app import app
from propensity.events.clock import DataClock
from propensity.workspace import Workspace

runner = CliRunner(env={"COLUMNS": "200"})
DAYS = 100


def _start() -> datetime:
    """The Monday that makes a DAYS-long data set end at least ten days before now."""
    latest = datetime.now(UTC) - timedelta(days=10 + DAYS)
    day = latest.replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


@pytest.fixture(scope="module")
def stale(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    from propensity.datasets.synthetic import generate
    from propensity.events.ingest import ingest_attributes, ingest_files
    from propensity.registry.registry import Registry
    from propensity.registry.train import train_project

    root = tmp_path_factory.mktemp("old-data")
    generate(root / "data", customers=800, days=DAYS, seed=3, start=_start())
    spec = spec_dict("data", days=DAYS)
    spec["actions"] = [{"template": "buy"}]
    spec["destinations"] = [{"name": "drop", "type": "file", "format": "csv"}]
    (root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    ws = Workspace.open(root)
    ingest_files(ws, [str(p) for p in sorted((root / "data" / "events").glob("*.parquet"))], source="events")
    for attr in ws.spec.attributes:
        ingest_attributes(ws, attr)
    result = train_project(ws, write_report=False)
    Registry(ws).set_production(result.bundle_id, forced=True, reason="test fixture")
    return ws


def _with_clock(ws: Workspace, clock: str) -> Workspace:
    path = ws.root / "propensity.yaml"
    data = yaml.safe_load(path.read_text())
    data["clock"] = clock
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return Workspace.open(ws.root)


@pytest.mark.slow
def test_live_clock_on_stale_data_warns_blocks_and_ranks_the_cause_first(stale: Workspace) -> None:
    ws = _with_clock(stale, "live")
    newest = DataClock.read(ws).newest_event
    assert newest is not None and datetime.now(UTC) - newest >= timedelta(days=10)
    when = f"{newest:%Y-%m-%d %H:%M} UTC"

    scored = runner.invoke(app, ["score", "-w", str(ws.root)])
    assert scored.exit_code == 0, scored.output
    text = " ".join(scored.output.split())
    assert "stale data" in text.lower() and when in text and "clock: data" in text

    published = runner.invoke(app, ["activate", "-w", str(ws.root)])
    assert published.exit_code == 1, published.output
    text = " ".join(published.output.split())
    assert "blocked" in text and "freshness" in text and when in text, text
    assert not (ws.root / "exports").exists()  # nothing published

    monitored = runner.invoke(app, ["monitor", "-w", str(ws.root), "--json"])
    assert monitored.exit_code == 1, monitored.output
    run = json.loads(monitored.stdout)
    first = run["groups"][0]
    assert first["lead"] == "freshness_silence:events" and first["status"] == "alert", run["groups"][:3]
    assert first["explains"], "the drift a silence causes is grouped under it"
    assert all(
        re.match(r"(feature_|null_rate|zero_rate|score_psi|expected_auc)", k) for k in first["explains"]
    )
    drift = {f"{r['name']}:{r['subject']}" for r in run["results"]
             if r["status"] != "ok" and r["name"].startswith("feature_")}  # fmt: skip
    assert drift and drift <= set(first["explains"])  # none of it left standing on its own
    # No calibration period reaches past the newest event.
    for r in run["results"]:
        for period in r["details"].get("periods", []):
            assert datetime.fromisoformat(period["as_of"]) + timedelta(days=7) <= newest

    table = runner.invoke(app, ["monitor", "-w", str(ws.root), "--only-firing"])
    out = table.output.splitlines()
    header = next(i for i, line in enumerate(out) if line.startswith("┃ monitor"))
    assert "freshness_silence" in out[header + 2], table.output  # the first row under the header
    assert "1. alert source events: no event for" in " ".join(table.output.split())


@pytest.mark.slow
def test_data_clock_scores_publishes_and_monitors_cleanly(stale: Workspace) -> None:
    ws = _with_clock(stale, "data")
    newest = DataClock.read(ws).newest_event

    scored = runner.invoke(app, ["score", "-w", str(ws.root)])
    assert scored.exit_code == 0, scored.output
    assert "stale data" not in scored.output.lower()
    assert f"as of {newest:%Y-%m-%d %H:%M}" in scored.output

    published = runner.invoke(app, ["activate", "-w", str(ws.root)])
    assert published.exit_code == 0, published.output

    monitored = runner.invoke(app, ["monitor", "-w", str(ws.root), "--json"])
    run = json.loads(monitored.stdout)
    firing = [(r["name"], r["subject"], r["value"]) for r in run["results"] if r["status"] == "alert"]
    assert monitored.exit_code == 0 and not firing, firing
    assert datetime.fromisoformat(run["as_of"]) == newest
