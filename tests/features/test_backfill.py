"""Materialised features and backfill: late events change nothing; back-filled history changes exactly the rows
of the customers (and as_of times) it reaches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from propensity.core.errors import PropensityError
from propensity.core.event import UTC_TS
from propensity.events.ingest import ingest_table
from propensity.events.log import DuckDBEventLog
from propensity.features import compute_features, parse_features
from propensity.features._plan import FeaturePlan
from propensity.features.materialize import (
    MaterializeError,
    backfill,
    event_reach,
    grid_cutoffs,
    grid_spine,
    materialize,
    materialize_grid,
    read_feature_values,
)
from propensity.workspace import Workspace

ALIGN = datetime(2024, 1, 1, tzinfo=UTC)
FEATURES = parse_features(
    [
        {"name": "purchases_7d", "aggregate": "count", "event_type": "purchase", "window": "7d"},
        {"name": "spend_30d", "aggregate": "sum", "field": "amount", "window": "30d"},
        {"name": "spend_per_purchase", "kind": "derived", "expr": "spend_30d / purchases_7d"},
    ]
)
LIFETIME = [*FEATURES, *parse_features([{"name": "orders_ever", "aggregate": "count", "window": "lifetime"}])]


def _events(rows: list[tuple[str, str, datetime, float]]) -> pa.Table:
    return pa.table(
        {
            "event_id": [r[0] for r in rows],
            "customer_id": [r[1] for r in rows],
            "event_type": ["purchase"] * len(rows),
            "event_time": pa.array([r[2] for r in rows], UTC_TS),
            "amount": [r[3] for r in rows],
        }
    )


def _history() -> pa.Table:
    rows = []
    for c in range(6):
        for d in range(0, 40, 3 + c % 3):
            rows.append((f"h{c}-{d}", f"c{c}", ALIGN + timedelta(days=d, hours=9 + c), 10.0 + c + d))
    return _events(rows)


def _setup(root: Path, features: list[Any]) -> tuple[Workspace, pa.Table]:
    ws = Workspace.open(root)
    ingest_table(ws, _history())
    with DuckDBEventLog(ws.db_path).connection() as con:
        cutoffs = grid_cutoffs(con, timedelta(days=7), align=ALIGN)
        spine = grid_spine(con, cutoffs)
    run = materialize(ws, features, spine)
    assert run.rows == spine.num_rows > 0
    return ws, spine


def _values(ws: Workspace) -> dict[tuple[str, datetime], tuple[Any, ...]]:
    table = read_feature_values(ws)
    names = [
        n
        for n in table.column_names
        if n not in ("customer_id", "as_of", "feature_set_version", "seen_until")
    ]
    rows = table.to_pylist()
    return {(r["customer_id"], r["as_of"]): tuple(r[n] for n in names) for r in rows}


def _fresh(
    ws: Workspace, features: list[Any], spine: pa.Table
) -> dict[tuple[str, datetime], tuple[Any, ...]]:
    with DuckDBEventLog(ws.db_path).connection() as con:
        table = compute_features(con, features, spine)
    names = [f.name for f in features]
    return {(r["customer_id"], r["as_of"]): tuple(r[n] for n in names) for r in table.to_pylist()}


def test_late_event_changes_no_past_row(tmp_path: Path) -> None:
    ws, spine = _setup(tmp_path, LIFETIME)
    before = _values(ws)
    # Happened on Jan 10 but arrives now (live): no materialised as_of (all in early 2024) could have seen it.
    ingest_table(ws, _events([("late-1", "c1", ALIGN + timedelta(days=9), 99.0)]), live=True)
    report = backfill(ws, LIFETIME)
    assert (report.events_new, report.events_in_range) == (1, 1)
    assert report.rows_recomputed == 0 and report.rows_changed == 0
    assert _values(ws) == before
    assert _fresh(ws, LIFETIME, spine) == before  # and that is what the engine says too
    again = backfill(ws, LIFETIME)  # the high-water mark moved past it
    assert again.events_new == 0 and again.rows_recomputed == 0


def test_backfilled_history_changes_exactly_the_affected_rows(tmp_path: Path) -> None:
    ws, spine = _setup(tmp_path, LIFETIME)
    before = _values(ws)
    when = ALIGN + timedelta(days=11, hours=3)  # a bulk import of history: available at its event_time
    ingest_table(
        ws, _events([("fix-1", "c2", when, 50.0), ("fix-2", "c3", when, 70.0), ("fix-3", "c3", when, 5.0)])
    )
    report = backfill(ws, LIFETIME)
    after = _values(ws)
    expected_keys = {k for k in before if k[0] in ("c2", "c3") and k[1] >= when}
    changed = {k for k in before if before[k] != after[k]}
    assert changed == expected_keys  # lifetime feature: every later as_of of those two customers
    assert report.rows_changed == len(expected_keys) == report.rows_recomputed
    assert (report.customers, report.customers_changed) == (2, 2)
    assert after == _fresh(ws, LIFETIME, spine)  # the backfilled table equals a full recomputation
    assert set(after) == set(before)


def test_backfill_recomputes_only_within_the_longest_window(tmp_path: Path) -> None:
    ws, spine = _setup(tmp_path, FEATURES)
    plan = FeaturePlan(FEATURES)
    assert event_reach(plan) == timedelta(days=30, hours=6)  # 30d window + one 6h bucket
    assert event_reach(FeaturePlan(LIFETIME)) is None
    before = _values(ws)
    when = ALIGN + timedelta(days=2)
    ingest_table(ws, _events([("old-1", "c4", when, 1.0)]))
    report = backfill(ws, FEATURES)
    as_ofs = sorted(
        {k[1] for k in before if k[0] == "c4" and when <= k[1] <= when + timedelta(days=30, hours=6)}
    )
    assert report.rows_recomputed == len(as_ofs) > 0
    after = _values(ws)
    assert {k for k in before if before[k] != after[k]} == {("c4", t) for t in as_ofs}
    assert after == _fresh(ws, FEATURES, spine)


def test_backfill_refuses_changed_definitions_and_empty_workspaces(tmp_path: Path) -> None:
    with pytest.raises(MaterializeError, match="materialize"):
        backfill(Workspace.open(tmp_path / "empty"), FEATURES)
    ws, _ = _setup(tmp_path / "ws", FEATURES)
    with pytest.raises(MaterializeError, match="definitions changed"):
        backfill(ws, LIFETIME)


def test_materialize_replaces_rows_and_rebuilds_for_a_new_version(tmp_path: Path) -> None:
    ws, spine = _setup(tmp_path, FEATURES)
    n = len(_values(ws))
    again = materialize(ws, FEATURES, spine.slice(0, 5))
    assert not again.rebuilt and len(_values(ws)) == n  # same keys replaced, not duplicated
    other = materialize(ws, LIFETIME, spine)
    assert other.rebuilt and len(_values(ws)) == n
    table = read_feature_values(ws)
    assert "orders_ever" in table.column_names
    assert set(table.column("feature_set_version").to_pylist()) == {FeaturePlan(LIFETIME).version}


def test_a_value_appearing_from_null_counts_as_changed(tmp_path: Path) -> None:
    big = parse_features(
        [
            {
                "name": "big_order_7d",
                "aggregate": "max",
                "field": "amount",
                "where": "amount > 1000",
                "window": "7d",
            }
        ]
    )
    ws, spine = _setup(tmp_path, big)
    assert all(v == (None,) for v in _values(ws).values())
    when = ALIGN + timedelta(days=20)
    ingest_table(ws, _events([("big-1", "c0", when, 5000.0)]))
    report = backfill(ws, big)
    after = _values(ws)
    assert {k for k, v in after.items() if v != (None,)} == {("c0", ALIGN + timedelta(days=21))}
    assert report.rows_changed == 1 == report.rows_recomputed  # one weekly as_of within 7d + 1 bucket of it
    assert after == _fresh(ws, big, spine)


def test_cli_materialize_then_backfill(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import propensity.cli.features_ops  # noqa: F401  (registers the commands on the features sub-app)
    from propensity.cli.app import app

    (tmp_path / "propensity.yaml").write_text(
        "features:\n  - {name: purchases_7d, aggregate: count, event_type: purchase, window: 7d}\n",
        encoding="utf-8",
    )
    ws = Workspace.open(tmp_path)
    ingest_table(ws, _history())
    runner = CliRunner()
    env = {"COLUMNS": "200"}
    out = runner.invoke(app, ["features", "materialize", "-w", str(tmp_path), "--every", "7d"], env=env)
    assert out.exit_code == 0, out.output
    assert "materialised" in out.output and "high-water mark" in out.output
    ingest_table(ws, _events([("fix-1", "c2", ALIGN + timedelta(days=13), 5.0)]))
    out = runner.invoke(app, ["features", "backfill", "-w", str(tmp_path)], env=env)
    assert out.exit_code == 0, out.output
    assert "rows changed" in out.output
    bad = runner.invoke(app, ["features", "materialize", "-w", str(tmp_path), "--every", "soon"], env=env)
    assert bad.exit_code == 1 and isinstance(bad.exception, PropensityError)


def test_backfill_adds_the_rows_of_a_customer_that_history_makes_known(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path)
    ingest_table(ws, _history())
    materialize_grid(ws, timedelta(days=7), features=FEATURES)
    before = _values(ws)
    when = ALIGN + timedelta(days=10)
    ingest_table(ws, _events([("new-1", "c9", when, 30.0), ("old-1", "c1", when, 1.0)]))
    report = backfill(ws, FEATURES)
    after = _values(ws)
    assert set(after) - set(before) == {("c9", t) for t in {t for _, t in before} if t >= when}
    assert report.rows_added == len(set(after) - set(before)) > 0
    assert report.customers == 2 and report.rows_recomputed > 0
    with DuckDBEventLog(ws.db_path).connection() as con:
        full = grid_spine(con, sorted({t for _, t in after}))
    assert after == _fresh(ws, FEATURES, full)  # equal to materialising the grid again from scratch
