"""A workspace with a hand-written event log, for outcome and report tests."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from propensity.core.score_row import SCORE_ROW_SCHEMA
from propensity.events.log import DuckDBEventLog
from propensity.workspace import Workspace


def make_workspace(root: Path, events: list[tuple[str, str, datetime]], **spec: Any) -> Workspace:
    """A workspace whose log holds ``events`` as (customer_id, event_type, event_time), available at once."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    ws = Workspace.open(root)
    ts = pa.timestamp("us", tz="UTC")
    table = pa.table(
        {
            "event_id": [f"e{i}" for i in range(len(events))],
            "customer_id": [c for c, _, _ in events],
            "event_type": [t for _, t, _ in events],
            "event_time": pa.array([at for _, _, at in events], ts),
        }
    )
    with DuckDBEventLog(ws.db_path).connection() as con:
        con.register("new_events", table)
        con.execute(
            "INSERT INTO events (event_id, customer_id, event_type, event_time, available_at, ingested_at) "
            "SELECT event_id, customer_id, event_type, event_time, event_time, event_time FROM new_events"
        ).fetchall()
    return ws


def score_rows(rows: list[dict[str, Any]]) -> pa.Table:
    """Canonical score rows; each dict gives customer_id, action, scored_at and any other fields."""
    full = []
    for r in rows:
        full.append(
            {
                "score": 0.5, "percentile": 50.0, "segment": None, "eligible": True, "next_best_action": None,
                "reason_codes": "[]", "holdout_group": None, "model_id": "m", "model_version": "m",
                "feature_set_version": "fs", "scoring_run_id": "r-test", "expiration_at": r["scored_at"],
                "decision_policy": None, "consent": None, "fallback": False, "as_of": r["scored_at"],
                "trigger_id": None, **r,
            }
        )  # fmt: skip
    return pa.Table.from_pylist(full, schema=SCORE_ROW_SCHEMA)
