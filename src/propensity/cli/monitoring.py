"""`propensity monitor`: run the monitors, store results, write the monitoring report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from propensity.cli._common import (
    WorkspaceOption,
    console,
    open_workspace,
    parse_time,
    progress_bar,
    warn_stale,
)
from propensity.core.errors import PropensityError

monitor_app = typer.Typer(
    invoke_without_command=True,
    rich_markup_mode="markdown",
)

_STYLE = {"ok": "green", "warning": "yellow", "alert": "bold red"}
_STEPS = {"sources": "sources: freshness and volume", "features": "features: drift against the reference",
          "model": "scores, calibration and CBPE", "done": "done"}  # fmt: skip


def _fmt(v: float) -> str:
    return "n/a" if v != v or v in (float("inf"), float("-inf")) else f"{v:.4g}"


def print_run(run: Any, *, all_results: bool = True) -> None:
    """The run's results, ranked: each data failure (freshness, volume) first with the drift it explains
    indented under it, then the other firing results, then (``all_results``) the ones that are ok."""
    from rich.markup import escape

    from propensity.core.clock import STALE_PREFIX
    from propensity.monitoring.ranking import rank

    groups = rank(run.results)
    table = Table(title=f"monitors as of {run.as_of.isoformat()} (run {run.run_id})")
    for col, justify in (("monitor", "left"), ("subject", "left"), ("value", "right"), ("warning >", "right"),
                         ("alert >", "right"), ("status", "left")):  # fmt: skip
        table.add_column(col, justify=justify, overflow="fold")  # type: ignore[arg-type]

    def row(r: Any, indent: str = "") -> None:
        style = _STYLE[r.status]
        table.add_row(indent + r.name, r.subject, _fmt(r.value), f"{r.warning:g}", f"{r.alert:g}",
                      f"[{style}]{r.status}[/]")  # fmt: skip

    for g in groups:
        row(g.lead)
        for r in g.explained:
            row(r, "  ↳ ")
    if all_results:
        for r in sorted((r for r in run.results if r.status == "ok"), key=lambda r: (r.name, r.subject)):
            row(r)
    console.print(table)
    for note in run.notes:
        if not note.startswith(STALE_PREFIX):  # shown in its own panel before the run
            console.print(f"[yellow]note:[/] {escape(note)}")
    if groups:
        console.print("[bold]ranked[/] (most telling first):")
        for i, g in enumerate(groups[:10], 1):
            console.print(f"  {i}. [{_STYLE[g.lead.status]}]{g.lead.status}[/] {escape(g.headline())}")
        if len(groups) > 10:
            console.print(f"  … {len(groups) - 10} more")


@monitor_app.callback()
def monitor(
    ctx: typer.Context,
    workspace: Path = WorkspaceOption,
    as_of: str = typer.Option(
        None,
        "--as-of",
        help="Monitor as of this UTC time (ISO 8601); default: now, or the event log's end when propensity.yaml "
        "says `clock: data`.",
    ),
    report: Path = typer.Option(None, "--report", help="Also write the HTML/JSON report into this folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the run as JSON instead of a table."),
    quiet_ok: bool = typer.Option(False, "--only-firing", help="List only warnings and alerts."),
) -> None:
    """Run every monitor, store the results in the workspace, send alerts; exit code 1 when any alert fires
    (so cron or CI can act on it).

    Firing results are ranked: a failure of the data itself (a silent source, a volume drop) comes first, with
    the feature and score drift it causes grouped under it. Labels count as matured only up to the event log's
    newest event, whatever the wall clock says.

    Examples:

        propensity monitor -w demo

        propensity monitor -w demo --as-of 2025-06-02 --report demo/reports

        propensity monitor report -w demo
    """
    if ctx.invoked_subcommand is not None:
        return
    from propensity.monitoring.runner import run_monitors
    from propensity.monitoring.store import dumps

    ws = open_workspace(workspace, require_spec=True)
    try:
        when = parse_time(as_of, ws.spec.timezone)
    except PropensityError as exc:
        raise typer.BadParameter(str(exc).removeprefix("--as-of: "), param_hint="--as-of") from None
    if not as_json:
        from propensity.events.clock import DataClock

        clock = DataClock.read(ws)
        warn_stale(clock.warning(clock.as_of(when)))
    with progress_bar() as bar:
        task = bar.add_task("monitors", total=3)

        def step(stage: str, done: int, total: int) -> None:
            bar.update(task, description=_STEPS.get(stage, stage), completed=done, total=total)

        run = run_monitors(ws, as_of=when, progress=step)
    if as_json:
        typer.echo(dumps(run.to_json()))
    else:
        print_run(run, all_results=not quiet_ok)
    if report is not None:
        paths = _write(ws, report, latest=run)
        if not as_json:
            console.print(f"report: {paths['html']}")
    if not as_json:
        counts = {s: sum(1 for r in run.results if r.status == s) for s in ("alert", "warning", "ok")}
        colour = _STYLE[run.status]
        console.print(f"[{colour}]{counts['alert']} alert(s), {counts['warning']} warning(s), {counts['ok']} ok[/]"
                      f" · next: `propensity monitor report -w {workspace}`")  # fmt: skip
    if run.status == "alert":
        raise typer.Exit(1)


def _write(ws: Any, folder: Path | None, runs: int | None = None, *, latest: Any = None) -> dict[str, Path]:
    from propensity.events.log import open_event_log
    from propensity.monitoring.report import write_report
    from propensity.monitoring.store import load_runs

    with ws.write_lock(), open_event_log(ws).connection() as con:
        stored = load_runs(con, limit=runs)
    return write_report(
        folder or ws.state_dir / "reports", stored, project=ws.spec.project or "", latest=latest
    )


@monitor_app.command("report")
def report_command(
    workspace: Path = WorkspaceOption,
    out: Path = typer.Option(None, "--out", "-o", help="Folder to write into; default: .propensity/reports."),
    runs: int = typer.Option(200, "--runs", min=1, help="How many of the latest stored runs to plot."),
) -> None:
    """Write the monitoring report from the stored runs: one self-contained HTML page (drift per feature over
    time, score histograms then vs now, calibration over time with CBPE estimates, freshness) and the numbers
    as JSON. Run `propensity monitor` first (or let the server run it on its schedule).

    Example:

        propensity monitor report -w demo --out demo/reports
    """
    ws = open_workspace(workspace, require_spec=True)
    paths = _write(ws, out, runs)
    console.print(f"[bold green]monitoring report[/]: {paths['html']} (JSON: {paths['json']})")
