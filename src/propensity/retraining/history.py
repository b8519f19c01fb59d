"""The record of retrain decisions: one JSON file per decision under ``.propensity/retraining/`` (the full
evidence) and one row per decision in the ``retrain_decisions`` table (for listing and querying)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from propensity.events.log import open_event_log, transaction
from propensity.workspace import Workspace

TABLE_DDL = """
CREATE TABLE IF NOT EXISTS retrain_decisions (
    decision_id  VARCHAR NOT NULL,
    decided_at   TIMESTAMPTZ NOT NULL,
    trigger      VARCHAR,
    outcome      VARCHAR NOT NULL,
    production   VARCHAR,
    challenger   VARCHAR,
    promoted     BOOLEAN NOT NULL,
    dry_run      BOOLEAN NOT NULL,
    record       JSON NOT NULL
)
"""


def _clean(obj: Any) -> Any:
    # NaN (an AUC on one class) is not JSON; null says "not measurable".
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def record_decision(workspace: Workspace, decision: dict[str, Any]) -> None:
    """Write the decision's JSON file and its table row."""
    data = _clean(decision)
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    folder = workspace.state_dir / "retraining"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{data['id']}.json").write_text(text, encoding="utf-8")
    with workspace.write_lock(), open_event_log(workspace).connection() as con:
        con.execute(TABLE_DDL).fetchall()
        with transaction(con):
            con.execute(
                "INSERT INTO retrain_decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [data["id"], datetime.fromisoformat(data["decided_at"]), data.get("trigger"), data["outcome"],
                 data.get("production"), data.get("challenger"), bool(data.get("promoted")),
                 bool(data.get("dry_run")), text],
            ).fetchall()  # fmt: skip


def history(workspace: Workspace, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Recorded decisions, oldest first (the latest ``limit`` when given)."""
    if not workspace.db_path.exists():
        return []
    with workspace.write_lock(), open_event_log(workspace).connection() as con:
        con.execute(TABLE_DDL).fetchall()
        sql = "SELECT record FROM retrain_decisions ORDER BY decided_at DESC, decision_id DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        rows = con.execute(sql).fetchall()
    return [json.loads(r[0]) for r in reversed(rows)]


def last_decision_time(workspace: Workspace) -> datetime | None:
    """When the last non-dry-run retrain was decided (what the schedule counts from)."""
    if not workspace.db_path.exists():
        return None
    with workspace.write_lock(), open_event_log(workspace).connection() as con:
        con.execute(TABLE_DDL).fetchall()
        row = con.execute("SELECT max(decided_at) FROM retrain_decisions WHERE NOT dry_run").fetchall()
    value: datetime | None = row[0][0] if row else None
    return value
