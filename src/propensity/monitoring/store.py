"""Monitor results in the workspace's DuckDB file: tables ``monitor_runs`` and ``monitor_results``.

One row per run (its time, bundle, overall status, notes) and one per monitor × subject of a run, with the
details as JSON text. Runs are appended, never edited, so the history is what the report plots over time.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import duckdb

from propensity.monitoring.monitors import MonitorResult, Status, worst
from propensity.monitoring.ranking import rank

RUNS_DDL = """
CREATE TABLE IF NOT EXISTS monitor_runs (
    run_id      VARCHAR NOT NULL,
    as_of       TIMESTAMPTZ NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    bundle_id   VARCHAR,
    status      VARCHAR NOT NULL,
    notes       VARCHAR
)
"""

RESULTS_DDL = """
CREATE TABLE IF NOT EXISTS monitor_results (
    run_id   VARCHAR NOT NULL,
    name     VARCHAR NOT NULL,
    subject  VARCHAR NOT NULL,
    value    DOUBLE,
    warning  DOUBLE,
    alert    DOUBLE,
    status   VARCHAR NOT NULL,
    details  VARCHAR
)
"""


@dataclass
class MonitorRun:
    """What one run of the monitors found."""

    run_id: str
    as_of: datetime
    started_at: datetime
    finished_at: datetime
    bundle_id: str | None
    results: list[MonitorResult]
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> Status:
        return worst(self.results)

    def firing(self, min_status: str = "warning") -> list[MonitorResult]:
        level = {"ok": 0, "warning": 1, "alert": 2}[min_status]
        return [r for r in self.results if {"ok": 0, "warning": 1, "alert": 2}[r.status] >= level]

    def result(self, name: str, subject: str) -> MonitorResult | None:
        return next((r for r in self.results if r.name == name and r.subject == subject), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "as_of": self.as_of.isoformat(),
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "bundle_id": self.bundle_id,
            "status": self.status,
            "notes": self.notes,
            # Firing results ranked, a data failure first with the drift it explains (monitoring/ranking.py).
            "groups": [g.to_json() for g in rank(self.results)],
            "results": [r.to_json() for r in self.results],
        }


def _clean(obj: Any) -> Any:
    """JSON without NaN/inf (they become null), so any JSON reader accepts it."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    return json.dumps(_clean(obj), allow_nan=False, default=str)


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(RUNS_DDL).fetchall()
    con.execute(RESULTS_DDL).fetchall()


def save_run(con: duckdb.DuckDBPyConnection, run: MonitorRun) -> None:
    """Append a run and its results (one transaction: readers see all of it or none)."""
    from propensity.events.log import transaction

    ensure_tables(con)
    with transaction(con):
        con.execute(
            "INSERT INTO monitor_runs VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                run.run_id,
                run.as_of,
                run.started_at,
                run.finished_at,
                run.bundle_id,
                run.status,
                dumps(run.notes),
            ],
        ).fetchall()
        if run.results:
            con.executemany(
                "INSERT INTO monitor_results VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    [run.run_id, r.name, r.subject, r.value if math.isfinite(r.value) else None, r.warning,
                     r.alert, r.status, dumps(r.details)]
                    for r in run.results
                ],
            )  # fmt: skip


def _has_tables(con: duckdb.DuckDBPyConnection) -> bool:
    rows = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('monitor_runs', 'monitor_results')"
    ).fetchall()
    return bool(rows and rows[0][0] == 2)


def load_runs(
    con: duckdb.DuckDBPyConnection,
    *,
    limit: int | None = None,
    order: Literal["as_of", "finished_at"] = "as_of",
) -> list[MonitorRun]:
    """Stored runs, oldest first by ``order`` (the latest ``limit`` when given): by ``as_of`` for a time axis,
    by ``finished_at`` for "the run made most recently" (what a backfill does not change)."""
    if not _has_tables(con):
        return []
    keys = "as_of DESC, finished_at DESC" if order == "as_of" else "finished_at DESC, as_of DESC"
    sql = f"SELECT run_id, as_of, started_at, finished_at, bundle_id, notes FROM monitor_runs ORDER BY {keys}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    heads = con.execute(sql).fetchall()
    if not heads:
        return []
    ids = [h[0] for h in heads]
    rows = con.execute(
        "SELECT run_id, name, subject, value, warning, alert, status, details FROM monitor_results "
        "WHERE run_id IN (SELECT unnest(?))",
        [ids],
    ).fetchall()
    by_run: dict[str, list[MonitorResult]] = {i: [] for i in ids}
    for run_id, name, subject, value, warning, alert, status, details in rows:
        v = float("nan") if value is None else float(value)
        by_run[run_id].append(
            MonitorResult(name, subject, v, float(warning), float(alert), status, json.loads(details or "{}"))
        )
    runs = [
        MonitorRun(h[0], h[1], h[2], h[3], h[4], sorted(by_run[h[0]], key=lambda r: (r.name, r.subject)),
                   json.loads(h[5] or "[]"))
        for h in heads
    ]  # fmt: skip
    return runs[::-1]
