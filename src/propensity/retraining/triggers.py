"""What makes a retrain due: a schedule, or a drift alert from the latest monitoring run.

Monitoring stores its runs in the ``monitor_runs`` and ``monitor_results`` tables of the workspace's DuckDB file
(:mod:`propensity.monitoring.store`); they are read here with plain SQL, so a workspace that never ran the
monitors simply has no drift trigger.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from propensity.events.log import open_event_log
from propensity.workspace import Workspace

ALERT = "alert"


def latest_monitor_run(workspace: Workspace) -> dict[str, Any] | None:
    """The newest monitoring run: ``run_id``, ``as_of``, ``finished_at``, ``status`` and its ``alerts``
    (``name`` / ``subject`` of each result at status alert); None when monitoring never ran."""
    if not workspace.db_path.exists():
        return None
    with workspace.write_lock(), open_event_log(workspace).connection() as con:
        tables = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('monitor_runs', 'monitor_results')"
        ).fetchall()[0][0]
        if tables != 2:
            return None
        head = con.execute(
            "SELECT run_id, as_of, finished_at, status FROM monitor_runs ORDER BY finished_at DESC, as_of DESC LIMIT 1"
        ).fetchall()
        if not head:
            return None
        run_id, as_of, finished_at, status = head[0]
        alerts = con.execute(
            "SELECT name, subject FROM monitor_results WHERE run_id = ? AND status = ? ORDER BY name, subject",
            [run_id, ALERT],
        ).fetchall()
    return {
        "run_id": run_id,
        "as_of": as_of,
        "finished_at": finished_at,
        "status": status,
        "alerts": [{"name": n, "subject": s} for n, s in alerts],
    }


def should_retrain(latest_monitor_run: dict[str, Any] | None, *, since: datetime | None = None) -> str | None:
    """The reason to retrain when the monitoring run raised an alert (and finished after ``since``, the last
    retrain, so one alert triggers one retrain); None otherwise."""
    run = latest_monitor_run
    if run is None:
        return None
    alerts = run.get("alerts") or []
    if run.get("status") != ALERT and not alerts:
        return None
    finished = run.get("finished_at")
    if since is not None and finished is not None and finished <= since:
        return None
    what = ", ".join(f"{a['name']} on {a['subject']}" for a in alerts[:5]) or "status alert"
    return f"drift alert in monitoring run {run['run_id']}: {what}"


def schedule_due(every: timedelta, last: datetime | None, now: datetime) -> str | None:
    """The reason to retrain when the last retrain is at least ``every`` old (or there was none)."""
    if last is None:
        return f"schedule: every {_fmt(every)}, no retrain recorded yet"
    if now - last >= every:
        return f"schedule: every {_fmt(every)}, last retrain {last.isoformat()}"
    return None


def _fmt(d: timedelta) -> str:
    s = int(d.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"
