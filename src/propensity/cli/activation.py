"""`propensity activate`: validation gates, then delivery to the declared destinations; `propensity
destinations list|status|retry`."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import typer
from rich.table import Table

from propensity.cli._common import (
    JsonOption,
    WorkspaceOption,
    console,
    fmt_int,
    open_workspace,
    print_json,
    progress_bar,
)
from propensity.config.durations import Duration

app = typer.Typer()

destinations_app = typer.Typer(
    help="The destinations declared in propensity.yaml, and how their last deliveries went.",
    no_args_is_help=True,
)


def print_result(result: Any) -> None:
    from propensity.activation.gates import render

    render(result.gates, console)
    if result.blocked:
        return
    if result.expired_rows:
        console.print(f"[yellow]{fmt_int(result.expired_rows)} expired row(s) left out[/]")
    table = Table(title=f"destinations for run {result.run.run_id}")
    for col in ("destination", "type", "status", "rows", "sent", "accepted", "failed", "where / why"):
        table.add_column(col, justify="right" if col in ("rows", "sent", "accepted", "failed") else "left")
    colours = {"delivered": "green", "skipped": "dim", "partial": "yellow", "failed": "bold red"}
    for r in result.reports:
        where = "; ".join(x for x in (r.location or "", r.message) if x)
        table.add_row(
            r.destination, r.type, f"[{colours[r.status]}]{r.status}[/]", fmt_int(r.rows), fmt_int(r.sent),
            fmt_int(r.accepted), fmt_int(r.failed), where,
        )  # fmt: skip
    if result.reports:
        console.print(table)
    for r in result.reports:
        if r.details.get("dead"):
            console.print(
                f"[yellow]{r.destination}: {fmt_int(r.details['dead'])} dead-lettered record(s) are not retried by "
                f"themselves[/]; once the receiver is fixed: propensity destinations retry {r.destination}"
            )
    else:
        console.print("[yellow]no destinations declared[/]: add a `destinations:` section to propensity.yaml")


@app.command()
def activate(
    workspace: Path = WorkspaceOption,
    run: str = typer.Option(None, "--run", "-r", help="The scoring run to activate (default: the newest)."),
    destination: list[str] = typer.Option(
        None, "--destination", "-d", help="Publish only to this destination (repeatable)."
    ),
    force: bool = typer.Option(False, "--force", help="Publish even if the gates fail (needs --reason)."),
    reason: str = typer.Option(None, "--reason", help="Why the gates are overridden; recorded with the run."),
    every: str = typer.Option(
        None, "--every", help="Micro-batch: repeat every interval (e.g. 5m, 30s) until Ctrl-C."
    ),
    score: bool = typer.Option(False, "--score", help="Score a new run first (each tick, with --every)."),
    max_ticks: int = typer.Option(
        None, "--max-ticks", min=1, help="With --every: stop after this many ticks."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Check a scoring run against the validation gates and publish it to the declared destinations.

    A run that fails a gate (schema, ranges, null rates, row count or score drift against the last published
    run, a collapsed distribution) is blocked: nothing is published and the report says why; exit code 1.
    Publishing a run again sends nothing that was sent already.

    Examples:

        propensity activate -w demo

        propensity activate -w demo --run 20260301T120000Z-ab12 --destination crm

        propensity activate -w demo --force --reason "PSI up after the pricing change, checked with marketing"

        propensity activate -w demo --score --every 5m
    """
    from propensity.activation.run import activate as run_activation
    from propensity.activation.run import activate_every

    if force and not (reason or "").strip():
        raise typer.BadParameter(
            "--force needs --reason TEXT (it is recorded with the run)", param_hint="--force"
        )
    if reason and not force:
        raise typer.BadParameter("--reason only goes with --force", param_hint="--reason")
    ws = open_workspace(workspace, require_spec=True)
    if every is not None:
        try:
            interval = Duration.parse(every, allow_lifetime=False).seconds
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--every") from None
        if interval <= 0:
            raise typer.BadParameter("the interval must be longer than 0s", param_hint="--every")
        if run or force or as_json:
            raise typer.BadParameter(
                "--every activates each new run; it does not take --run, --force or --json"
            )
        stop = threading.Event()

        def on_signal(_sig: int, _frame: FrameType | None) -> None:
            console.print("[yellow]stopping after this tick (Ctrl-C)[/]")
            stop.set()

        def on_tick(result: Any, error: Exception | None) -> None:
            if error is not None:
                console.print(f"[bold red]tick failed:[/] {error}")
            elif result is not None:
                print_result(result)

        previous = signal.signal(signal.SIGINT, on_signal)
        try:
            console.print(f"activating every {every}{' (scoring first)' if score else ''}; Ctrl-C stops")
            ticks = activate_every(
                ws, interval, score=score, destinations=destination or None, ticks=max_ticks, stop=stop,
                on_tick=on_tick,
            )  # fmt: skip
        finally:
            signal.signal(signal.SIGINT, previous)
        console.print(f"stopped after {ticks} tick(s)")
        return

    run_id = run
    if score:
        from propensity.scoring.batch import score_and_store

        if as_json:
            run_id = score_and_store(ws).run.run_id
        else:
            with console.status("scoring"):
                run_id = score_and_store(ws).run.run_id
    with progress_bar(quiet=as_json) as bar:
        task = bar.add_task("publishing", total=None)

        def progress(name: str, done: int, total: int) -> None:
            bar.update(task, description=f"publishing {name}".strip(), completed=done, total=max(total, 1))

        result = run_activation(
            ws, run_id, destinations=destination or None, force=reason if force else None, progress=progress
        )
    if as_json:
        print_json(result.to_json())
    else:
        print_result(result)
    if not result.ok:
        raise typer.Exit(1)
    if not as_json:
        console.print(f"next: propensity destinations status -w {workspace}")


@destinations_app.command("list")
def destinations_list(workspace: Path = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """The destinations declared in propensity.yaml.

    Example:

        propensity destinations list -w demo
    """
    from propensity.activation.destinations import destination_specs

    ws = open_workspace(workspace, require_spec=True)
    specs = destination_specs(ws)
    if as_json:
        print_json([s.model_dump(mode="json", exclude_none=True) for s in specs])
        return
    if not specs:
        console.print("no destinations declared: add a `destinations:` section to propensity.yaml")
        return
    table = Table(title="destinations")
    for col in ("name", "type", "realtime", "target", "actions"):
        table.add_column(col)
    for s in specs:
        target = getattr(s, "url", None) or getattr(s, "redis_url", None) or f"{getattr(s, 'path', '')} ({getattr(s, 'format', '')})"  # fmt: skip
        table.add_row(
            s.name, s.type, "yes" if s.realtime else "", str(target), ", ".join(s.actions or ["all"])
        )
    console.print(table)


@destinations_app.command("status")
def destinations_status(workspace: Path = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Each destination's last delivery: run, outcome, counts; webhook outboxes' pending and dead records.

    Example:

        propensity destinations status -w demo
    """
    from propensity.activation.delivery import Outbox
    from propensity.activation.destinations import destination_specs, state_dir
    from propensity.activation.run import ledger

    ws = open_workspace(workspace, require_spec=True)
    last = ledger(ws).latest()
    rows: list[dict[str, Any]] = []
    table = Table(title="destinations")
    for col in ("name", "type", "last run", "status", "at", "sent", "accepted", "failed", "queue"):
        table.add_column(col)
    dead = []
    for s in destination_specs(ws):
        entry = last.get(s.name)
        queue = ""
        outbox_path = state_dir(ws) / f"{s.name}.outbox.sqlite"
        if s.type == "webhook" and outbox_path.exists():
            counts = Outbox(outbox_path).counts()
            queue = f"{fmt_int(counts['pending'])} pending, {fmt_int(counts['dead'])} dead"
            if counts["dead"]:
                dead.append(s.name)
        audience_path = state_dir(ws) / f"{s.name}.audience.sqlite"
        if s.type == "audience" and audience_path.exists():
            queue = f"{fmt_int(audience_members(audience_path))} customers in the audience"
        rows.append({"name": s.name, "type": s.type, "last_run": None if entry is None else entry["run_id"],
                     "status": "never published" if entry is None else entry["status"],
                     "at": None if entry is None else entry["at"],
                     "report": None if entry is None else entry["report"], "queue": queue or None})  # fmt: skip
        if entry is None:
            table.add_row(s.name, s.type, "—", "never published", "", "", "", "", queue)
            continue
        rep = entry["report"]
        table.add_row(
            s.name, s.type, entry["run_id"], entry["status"], entry["at"][:19], fmt_int(rep["sent"]),
            fmt_int(rep["accepted"]), fmt_int(rep["failed"]), queue,
        )  # fmt: skip
    if as_json:
        print_json(rows)
        return
    console.print(table)
    if dead:
        console.print(
            f"[yellow]dead-lettered records are not retried by themselves[/]: once the receiver is fixed, "
            f"propensity destinations retry {' '.join(dead)} -w {workspace}"
        )


@destinations_app.command("retry")
def destinations_retry(
    names: list[str] = typer.Argument(None, help="Webhook destinations to retry (default: every webhook)."),
    workspace: Path = WorkspaceOption,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON report per destination."),
) -> None:
    """Send a webhook's dead-lettered records again, once the receiver is fixed.

    Records a receiver refused too often (an outage longer than `max_attempts` allows, or a 4xx) go to the
    dead-letter file and are never sent again by themselves; `activate` exits 1 while any are there. This puts
    them back in the queue with fresh attempts and delivers them under their original idempotency keys, so a
    receiver that honours `Idempotency-Key` applies each record exactly once. Exit code 1 if any are still
    undelivered.

    Examples:

        propensity destinations retry -w demo

        propensity destinations retry crm -w demo --json
    """
    import json

    from propensity.activation.run import retry_dead

    ws = open_workspace(workspace, require_spec=True)
    with console.status("retrying dead-lettered records"):
        reports = retry_dead(ws, names or None)
    if as_json:
        print(json.dumps([r.to_json() for r in reports], indent=2))
    elif not reports:
        console.print("no webhook destinations declared: nothing to retry")
    else:
        table = Table(title="dead-letter retry")
        for col in ("destination", "status", "requeued", "sent", "accepted", "where / why"):
            table.add_column(col, justify="right" if col in ("requeued", "sent", "accepted") else "left")
        colours = {"delivered": "green", "skipped": "dim", "partial": "yellow", "failed": "bold red"}
        for r in reports:
            table.add_row(
                r.destination, f"[{colours[r.status]}]{r.status}[/]", fmt_int(r.details["requeued"]),
                fmt_int(r.sent), fmt_int(r.accepted), "nothing dead-lettered" if r.status == "skipped" else r.message,
            )  # fmt: skip
        console.print(table)
    if any(r.status in ("partial", "failed") for r in reports):
        raise typer.Exit(1)


def quickstart_export(ws: Any) -> None:
    """Quickstart's export step: the newest stored run through the gates into the project's file drops."""
    from propensity.activation.destinations import destination_specs
    from propensity.activation.run import activate as run_activation
    from propensity.scoring.score_store import open_score_store

    drops = [s.name for s in destination_specs(ws) if s.type == "file"]
    if not drops or open_score_store(ws).latest_run() is None:
        return
    console.rule("export: validation gates, then the file drop")
    result = run_activation(ws, destinations=drops)
    print_result(result)
    if result.blocked:
        console.print(
            f"[yellow]not exported[/]; to publish anyway: propensity activate -w {ws.root} --force --reason TEXT"
        )
        return
    for report in result.reports:
        if report.location:
            console.print(f"exported run [bold]{result.run.run_id}[/] to {report.location}")


def audience_members(state_path: Path) -> int:
    """Customers the audience API has accepted, from an audience destination's sync state."""
    import sqlite3

    con = sqlite3.connect(state_path)
    try:
        row = con.execute("SELECT count(DISTINCT customer_id) FROM members").fetchone()
    finally:
        con.close()
    return int(row[0]) if row else 0
