"""Activation of a scoring run: gates, then each destination, at most once per (run, destination).

:func:`activate` reads a run from the score store (the newest by default), checks it (gates.py) against the last
run that was published, and, unless blocked, hands its fresh rows (expired rows never leave) to each declared
destination. A ledger (SQLite, ``.propensity/activation/ledger.sqlite``) records each (run, destination)
outcome: a destination that took the run completely is skipped when the run is activated again, and one that
took it partly (a webhook receiver that was down) is given it again, and its own state makes sure only what is
missing goes out. :func:`activate_every` is the micro-batch loop behind ``propensity activate --every 5m``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from propensity.activation.destinations import build_destination, destination_specs, state_dir
from propensity.activation.destinations.base import (
    Destination,
    PublishReport,
    PublishRun,
    fresh_rows,
    select_actions,
)
from propensity.activation.gates import GateCheck, GateReport, check_freshness, run_gates
from propensity.core.errors import PropensityError
from propensity.workspace import Workspace

_LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    run_id      TEXT NOT NULL,
    destination TEXT NOT NULL,
    status      TEXT NOT NULL,
    report      TEXT NOT NULL,
    at          TEXT NOT NULL,
    PRIMARY KEY (run_id, destination)
);
"""


class NoRunError(PropensityError):
    """There is no scoring run to activate."""


@dataclass
class ActivationResult:
    run: PublishRun
    gates: GateReport
    reports: list[PublishReport] = field(default_factory=list)
    expired_rows: int = 0

    @property
    def blocked(self) -> bool:
        return self.gates.blocked

    @property
    def ok(self) -> bool:
        """Not blocked, and every destination took the run (or had it already)."""
        return not self.blocked and all(r.status in ("delivered", "skipped") for r in self.reports)

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run.to_json(),
            "blocked": self.blocked,
            "gates": self.gates.to_json(),
            "expired_rows": self.expired_rows,
            "destinations": [r.to_json() for r in self.reports],
        }


class Ledger:
    """Which (run, destination) pairs were published, and how it went."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.executescript(_LEDGER_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            yield con
        finally:
            con.close()

    def status(self, run_id: str, destination: str) -> str | None:
        with self._connect() as con:
            row = con.execute(
                "SELECT status FROM deliveries WHERE run_id = ? AND destination = ?", (run_id, destination)
            ).fetchone()
        return None if row is None else str(row[0])

    def record(self, run_id: str, report: PublishReport) -> None:
        with self._connect() as con:
            con.execute(
                "INSERT INTO deliveries VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id, destination) DO UPDATE "
                "SET status = excluded.status, report = excluded.report, at = excluded.at",
                (run_id, report.destination, report.status, json.dumps(report.to_json()),
                 datetime.now(UTC).isoformat()),
            )  # fmt: skip

    def latest(self) -> dict[str, dict[str, Any]]:
        """Per destination: its most recent (run, status, time, report)."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT destination, run_id, status, at, report FROM deliveries ORDER BY at"
            ).fetchall()
        out: dict[str, dict[str, Any]] = {}
        for dest, run_id, status, at, report in rows:
            out[str(dest)] = {"run_id": run_id, "status": status, "at": at, "report": json.loads(report)}
        return out


def ledger(workspace: Workspace) -> Ledger:
    return Ledger(state_dir(workspace) / "ledger.sqlite")


def gates_dir(workspace: Workspace) -> Path:
    return state_dir(workspace) / "gates"


def activate(
    workspace: Workspace,
    run_id: str | None = None,
    *,
    destinations: Sequence[str] | None = None,
    force: str | None = None,
    store: Any = None,
    built: Sequence[Destination] | None = None,
    now: datetime | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> ActivationResult:
    """Gate, then publish run ``run_id`` (default: the newest) to the declared destinations (or those named).

    ``force`` is the recorded reason to publish a run that fails its gates. ``built`` replaces the destinations
    built from the spec (tests, embedding). Raises :class:`NoRunError` when there is no run.
    """
    from propensity.scoring.score_store import open_score_store

    store = store or open_score_store(workspace)
    run = store.get_run(run_id) if run_id else store.latest_run()
    if run is None:
        raise NoRunError("there is no scoring run to activate yet; run `propensity score` first")
    rows: pa.Table = store.read_run(run.run_id)
    publish_run = PublishRun.of(run)
    # By time, not id: the store resolves an id among the runs of the asked status only, and this run may be
    # a blocked one being forced.
    previous = store.latest_run(before=run.scored_at.isoformat(), status="complete")
    previous_rows = store.read_run(previous.run_id) if previous is not None else None
    report = gate(workspace, rows, previous_rows, run_id=run.run_id,
                  previous_run_id=previous.run_id if previous else None, run=run)  # fmt: skip
    if force is not None and report.failed:
        report.force(force)
    report.save(gates_dir(workspace))
    _record_on_run(store, run, report)
    result = ActivationResult(publish_run, report)
    if report.blocked:
        return result

    now = now or datetime.now(UTC)
    fresh = fresh_rows(rows, now)
    result.expired_rows = rows.num_rows - fresh.num_rows
    specs = {s.name: s for s in destination_specs(workspace, destinations)}
    targets = list(built) if built is not None else [build_destination(s, workspace) for s in specs.values()]
    book = ledger(workspace)
    for i, dest in enumerate(targets):
        if progress is not None:
            progress(dest.name, i, len(targets))
        if book.status(run.run_id, dest.name) in ("delivered", "skipped"):
            result.reports.append(PublishReport(dest.name, dest.type, "skipped", message="already published"))
            continue
        if fresh.num_rows == 0:
            result.reports.append(
                PublishReport(dest.name, dest.type, "failed", message="every row has expired")
            )
            continue
        spec = specs.get(dest.name)
        subset = select_actions(fresh, getattr(spec, "actions", None))
        target = getattr(spec, "target", None)
        if target is not None:
            from propensity.activation.targets import select_target, target_named

            subset = select_target(subset, target_named(workspace.spec, target))
        try:
            outcome = dest.publish(publish_run, subset)
        except Exception as exc:  # one destination's failure must not keep the others from their run
            outcome = PublishReport(dest.name, dest.type, "failed", rows=subset.num_rows,
                                    message=f"{type(exc).__name__}: {exc}")  # fmt: skip
        book.record(run.run_id, outcome)
        result.reports.append(outcome)
    if progress is not None:
        progress("", len(targets), len(targets))
    return result


def _expected_top_shares(workspace: Workspace, rows: pa.Table) -> dict[str, float]:
    """Per action, the share of its model's test scores held by the commonest value (from the bundle that
    scored the run); empty when the bundle is not in this workspace's registry."""
    from propensity.activation.gates import reference_top_share
    from propensity.registry.bundle import read_manifest
    from propensity.registry.registry import Registry

    versions = set(rows.column("model_version").unique().to_pylist()) if rows.num_rows else set()
    registry = Registry(workspace)
    out: dict[str, float] = {}
    for version in versions:
        try:
            manifest = read_manifest(registry.path(str(version)))
        except Exception:  # a fallback run, or a bundle from elsewhere: no reference, the plain rule applies
            continue
        for action, info in manifest.actions.items():
            out[action] = max(out.get(action, 0.0), reference_top_share(info.score_quantiles))
    return out


def gate(
    workspace: Workspace,
    rows: pa.Table,
    previous: pa.Table | None,
    *,
    run_id: str,
    previous_run_id: str | None,
    run: Any = None,
) -> GateReport:
    """The workspace's gates, plus the score-row contract (core/contract.py) and, given the ``run`` (a
    :class:`~propensity.scoring.score_store.ScoringRun`), the freshness of the data it was scored on."""
    settings = workspace.spec.gates
    if not settings.enabled:
        skipped = GateCheck(
            "gates", True, None, None, "gates are disabled in propensity.yaml (gates.enabled)"
        )
        return GateReport(run_id, previous_run_id, [skipped])
    report = run_gates(
        rows, previous, settings, run_id=run_id, previous_run_id=previous_run_id,
        expected_top_share=_expected_top_shares(workspace, rows),
    )  # fmt: skip
    from propensity.core.contract import validate_rows

    problems = validate_rows(rows)
    message = "rows honour the score row contract" if not problems else "; ".join(problems[:5])
    report.checks.insert(1, GateCheck("contract", not problems, float(len(problems)), 0.0, message))
    if run is not None:
        report.checks.append(
            check_freshness(run.as_of, _newest_event(workspace, run), workspace.spec.freshness_threshold)
        )
    return report


def _newest_event(workspace: Workspace, run: Any) -> datetime | None:
    """The newest event the run could see: recorded with the run by batch scoring, else read from the log."""
    recorded = (run.details or {}).get("data_clock", {}).get("newest_event")
    if recorded:
        return datetime.fromisoformat(recorded)
    from propensity.events.clock import newest_event_time
    from propensity.events.log import open_event_log

    if not workspace.db_path.exists():
        return None
    with workspace.write_lock(), open_event_log(workspace).connection(read_only=True) as con:
        return newest_event_time(con, run.as_of)


def _record_on_run(store: Any, run: Any, report: GateReport) -> None:
    """Keep the verdict with the run: status ``blocked`` (or back to ``complete`` when forced) and the report."""
    status = "blocked" if report.blocked else ("complete" if run.status == "blocked" else None)
    store.update_run(run.run_id, status=status, details={"gates": report.to_json()})


def activate_every(
    workspace: Workspace,
    interval_s: float,
    *,
    score: bool = False,
    destinations: Sequence[str] | None = None,
    ticks: int | None = None,
    stop: threading.Event | None = None,
    on_tick: Callable[[ActivationResult | None, Exception | None], None] | None = None,
) -> int:
    """Micro-batch: every ``interval_s``, (score a new run when ``score``, then) activate the newest run.

    Runs until ``stop`` is set or ``ticks`` ticks are done; returns the ticks run. A tick that fails (no run
    yet, a scoring error) is reported to ``on_tick`` and the loop carries on; the next tick tries again.
    """
    stop = stop or threading.Event()
    done = 0
    while not stop.is_set() and (ticks is None or done < ticks):
        started = time.monotonic()
        result: ActivationResult | None = None
        error: Exception | None = None
        try:
            run_id = None
            if score:
                from propensity.scoring.batch import score_and_store

                run_id = score_and_store(workspace).run.run_id
            result = activate(workspace, run_id, destinations=destinations)
        except PropensityError as exc:
            error = exc
        done += 1
        if on_tick is not None:
            on_tick(result, error)
        if ticks is not None and done >= ticks:
            break
        stop.wait(max(0.0, interval_s - (time.monotonic() - started)))
    return done


def retry_dead(workspace: Workspace, names: Sequence[str] | None = None) -> list[PublishReport]:
    """Send the dead-lettered records of the webhook destinations (``names`` selects some) again, under their
    original idempotency keys; one report per webhook destination. Records that fail again go back to the
    dead letter (or wait for the next sync), and the report says so."""
    from propensity.activation.destinations.webhook import Webhook

    specs = destination_specs(workspace, names)
    hooks = [d for d in (build_destination(s, workspace) for s in specs) if isinstance(d, Webhook)]
    if names and len(hooks) < len(specs):
        other = ", ".join(s.name for s in specs if s.type != "webhook")
        raise PropensityError(f"{other}: only webhook destinations have a dead letter to retry")
    return [hook.retry_dead() for hook in hooks]
