"""`propensity features show|describe` on a small synthetic workspace: values, explanations, statistics, errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from propensity.cli._common import parse_as_of
from propensity.cli.app import app
from propensity.cli.features import features_app
from propensity.events.ingest import ingest_attributes, ingest_files
from propensity.events.log import DuckDBEventLog
from propensity.features import compute_features
from propensity.workspace import Workspace

PROJECTS = Path(__file__).resolve().parents[2] / "src/propensity/datasets/projects"
AS_OF = "2025-09-22T00:00:00"
runner = CliRunner()


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    from propensity.datasets.synthetic import generate

    root = tmp_path_factory.mktemp("features_cli")
    shutil.copy(PROJECTS / "synthetic.yaml", root / "propensity.yaml")
    generate(root / "data/synthetic", customers=150, days=21, seed=3, start=datetime(2025, 9, 1, tzinfo=UTC))
    workspace = Workspace.open(root, require_spec=True)
    source = workspace.spec.source("events")
    ingest_files(workspace, [str(p) for p in sorted(root.glob(source.path))], source=source.name)
    for attrs in workspace.spec.attributes:
        ingest_attributes(workspace, attrs)
    return workspace


def _busy_customer(ws: Workspace) -> str:
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        rows = con.execute(
            "SELECT customer_id FROM events WHERE event_type = 'purchase' AND event_time < ? "
            "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1",
            [parse_as_of(AS_OF)],
        ).fetchall()
    return str(rows[0][0])


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args), env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.output


def test_features_app_is_importable_for_other_commands() -> None:
    assert {c.name for c in features_app.registered_commands} >= {"show", "describe"}
    out = invoke("features", "--help")
    assert "show" in out and "describe" in out


def test_show_prints_the_offline_vector(ws: Workspace) -> None:
    cid = _busy_customer(ws)
    out = invoke("features", "show", cid, "--as-of", AS_OF, "-w", str(ws.root))
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        spine = pa.table(
            {"customer_id": [cid], "as_of": pa.array([parse_as_of(AS_OF)], pa.timestamp("us", "UTC"))}
        )
        row = compute_features(con, ws.spec.features, spine).to_pylist()[0]
    assert f"{cid} as of 2025-09-22 00:00:00 UTC" in out
    assert "fs-" in out
    for name in ("purchases_90d", "active_days_d1_7", "plan", "sessions_30d"):
        line = next(ln for ln in out.splitlines() if f" {name} " in ln)
        assert str(row[name]) in line or f"{row[name]:,.6g}" in line, (name, row[name], line)


def test_explain_lists_exactly_the_contributing_events(ws: Workspace) -> None:
    cid = _busy_customer(ws)
    out = invoke("features", "show", cid, "--as-of", AS_OF, "--explain", "--events", "50", "-w", str(ws.root))
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        t = parse_as_of(AS_OF)
        (n,) = con.execute(
            "SELECT count(*) FROM events WHERE customer_id = ? AND event_type = 'purchase' "
            "AND event_time <= ? AND available_at <= ?",
            [cid, t, t],
        ).fetchall()[0]
    block = out.split("purchases_lifetime = ")[1].split("\n\n")[0]
    assert block.startswith(f"{n} ")
    assert block.count(" purchase ") == n  # one table row per contributing purchase
    assert "derived from page_views_cal_15d, page_views_cal_8d" in out  # page_views_week2
    assert "attribute 'plan'" in out


def test_describe_prints_definitions_version_and_statistics(ws: Workspace) -> None:
    out = invoke("features", "describe", "--sample", "100", "--as-of", AS_OF, "-w", str(ws.root))
    assert "feature set fs-" in out and "100 customers" in out
    for header in ("null %", "mean", "min", "max", "definition"):
        assert header in out
    line = next(ln for ln in out.splitlines() if " purchases_7d " in ln)
    assert "count purchase over 7d (bucket 1d)" in line


def test_unknown_customer_and_bad_time_are_clear_errors(ws: Workspace) -> None:
    """Through the real command (its error handler prints the message and exits 1, no traceback)."""
    for args, message in (
        (["nobody"], "no events or attributes for customer 'nobody'"),
        (["c1", "--as-of", "yesterday"], "is not a date or time"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "propensity", "features", "show", *args, "-w", str(ws.root)],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert result.returncode == 1, result.stdout + result.stderr
        assert message in result.stdout + result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_explained_events_count_equals_every_count_feature(ws: Workspace) -> None:
    """For every count aggregate and sessions-free count, the events --explain lists are exactly those counted."""
    from propensity.config.features import AggregateFeature
    from propensity.features.inspect import explain_feature, feature_vector

    t = parse_as_of("2025-09-18T15:40:00")  # mid-week, mid-afternoon: buckets cut windows short
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        ids = [
            r[0]
            for r in con.execute("SELECT DISTINCT customer_id FROM events ORDER BY 1 LIMIT 40").fetchall()
        ]
        checked = 0
        for cid in ids:
            values = feature_vector(con, ws.spec.features, cid, t)
            for f in ws.spec.features:
                if isinstance(f, AggregateFeature) and f.aggregate == "count":
                    ex = explain_feature(con, f, cid, t, limit=1)
                    assert ex.total_rows == values[f.name], (cid, f.name, ex.summary)
                    checked += 1
    assert checked > 250
