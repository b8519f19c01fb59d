"""`propensity features audit|materialize|backfill`: leakage audit, materialised history, and backfill.

See ``docs/leakage-and-backfill.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import typer
from rich.table import Table

from propensity.cli._common import (
    EngineOption,
    JsonOption,
    WorkspaceOption,
    console,
    fmt_int,
    open_workspace,
    parse_as_of,
    print_json,
)
from propensity.config.durations import Duration
from propensity.core.errors import PropensityError

# Merged into `propensity features` by cli/features.py.
app = typer.Typer()


def _pct(share: float | None) -> str:
    if share is None:
        return "—"
    if share == 0:
        return "0"
    return f"{share:.1%}" if share >= 0.001 else "<0.1%"


@app.command("audit")
def audit(
    workspace: Path = WorkspaceOption,
    action: list[str] = typer.Option(
        None, "--action", "-a", help="Measure label-likeness against this action (repeatable); default: all."
    ),
    cutoffs: list[str] = typer.Option(
        None,
        "--cutoffs",
        help="As-of times to audit (repeatable or comma-separated dates); default: the training grid.",
    ),
    sample: int = typer.Option(500, "--sample", help="Audit at most this many customers (0: all)."),
    threshold: float = typer.Option(
        0.95, "--threshold", min=0.5, max=1.0, help="Flag a feature whose AUC alone reaches this."
    ),
    strict: bool = typer.Option(False, "--strict", help="Exit with code 1 when any feature is flagged."),
    out: Path = typer.Option(
        None, "--out", "-o", help="Folder for the JSON report (default .propensity/reports)."
    ),
    engine: str | None = EngineOption,
    as_json: bool = JsonOption,
) -> None:
    """Look for leakage in the training spine: features reading past as_of, attribute snapshots loaded after
    the fact, dates in the future, and features that look like the label (single-feature AUC).

    Example:

        propensity features audit -w demo --action churn_30d --sample 1000 --strict
    """
    from propensity.features.audit import LEAK_FLAGS, write_audit_report
    from propensity.labels.audit import audit_workspace

    ws = open_workspace(workspace, require_spec=True, engine=engine)
    when = [
        parse_as_of(p, ws.spec.timezone) for c in cutoffs or [] for p in c.split(",") if p.strip()
    ] or None
    with console.status("auditing features…") if not as_json else contextlib.nullcontext():
        report = audit_workspace(ws, actions=action or None, cutoffs=when, sample=sample, threshold=threshold)
    path = write_audit_report(report, out or ws.state_dir / "reports")
    if as_json:
        print_json({**report.to_json(), "report_path": str(path)})
        if strict and report.flagged:
            raise typer.Exit(1)
        return
    actions = list(report.actions)
    table = Table(
        title=f"leakage audit · {fmt_int(report.rows)} rows · {fmt_int(report.customers)} customers · "
        f"{report.cutoffs} as-of times · {report.feature_set_version}"
    )
    table.add_column("feature", no_wrap=True)
    table.add_column("kind")
    table.add_column("past as_of", justify="right")
    table.add_column("back-dated", justify="right")
    table.add_column("late-sensitive", justify="right")
    for name in actions:
        table.add_column(f"AUC {name}", justify="right")
    table.add_column("flags")
    for f in report.features:
        checks = f.checks
        style = "bold red" if f.leaky else ("yellow" if f.flags else "")
        row = [
            f.name,
            f.kind,
            _pct(checks["reads_beyond_as_of"].share) if "reads_beyond_as_of" in checks else "—",
            _pct(checks["backdated"].share) if "backdated" in checks else "—",
            _pct(checks["late_sensitive"].share) if "late_sensitive" in checks else "—",
        ]
        for name in actions:
            v = f.auc.get(name)
            row.append("—" if v is None else f"{v:.3f}")
        row.append(", ".join(f.flags))
        table.add_row(*row, style=style)
    console.print(table)
    for f in report.flagged:
        colour = "red" if any(x in LEAK_FLAGS for x in f.flags) else "yellow"
        for note in f.notes:
            if "sensitive to late data" not in note:
                console.print(f"[{colour}]{f.name}[/]: {note}", highlight=False)
    flagged = report.flagged
    verdict = (
        f"[bold red]{len(flagged)} feature(s) flagged[/]" if flagged else "[bold green]no feature flagged[/]"
    )
    console.print(f"{verdict}; report: {path}")
    if strict and flagged:
        raise typer.Exit(1)


@app.command("materialize")
def materialize_cmd(
    workspace: Path = WorkspaceOption,
    every: str = typer.Option("7d", "--every", help="Between as-of times, e.g. 1d or 7d."),
    start: str = typer.Option(None, "--start", help="First as-of time (default: the first event)."),
    end: str = typer.Option(None, "--end", help="Last as-of time (default: the last event)."),
) -> None:
    """Compute the features of every known customer at as-of times on a grid and store them in the
    workspace (table feature_values), with the high-water mark of the data they saw.

    Example:

        propensity features materialize -w demo --every 7d --start 2025-01-06
    """
    from propensity.features.materialize import materialize_grid

    ws = open_workspace(workspace, require_spec=True)
    try:
        step = Duration.parse(every, allow_lifetime=False)
    except ValueError as exc:
        raise PropensityError(f"--every {every!r}: {exc}") from None
    with console.status("materialising features…"):
        run = materialize_grid(
            ws,
            step.timedelta,
            start=parse_as_of(start, ws.spec.timezone) if start else None,
            end=parse_as_of(end, ws.spec.timezone) if end else None,
        )
    first = run.first_as_of.isoformat() if run.first_as_of else "—"
    last = run.last_as_of.isoformat() if run.last_as_of else "—"
    hwm = run.high_water_mark.isoformat() if run.high_water_mark else "—"
    note = " (the table held another feature set and was rebuilt)" if run.rebuilt else ""
    console.print(
        f"[bold green]materialised[/] {fmt_int(run.rows)} rows · {fmt_int(run.customers)} customers · "
        f"{first} … {last} · {run.feature_set_version}{note}\nhigh-water mark (latest ingested_at seen): "
        f"{hwm} · {run.seconds:.1f}s"
    )


@app.command("backfill")
def backfill_cmd(
    workspace: Path = WorkspaceOption, engine: str | None = EngineOption, as_json: bool = JsonOption
) -> None:
    """Recompute the materialised rows that late or corrected events (ingested since they were computed) can
    change, and only those; late events that were not yet available at a row's as_of change nothing.

    Example:

        propensity features backfill -w demo
    """
    from propensity.features.materialize import backfill

    ws = open_workspace(workspace, require_spec=True, engine=engine)
    with console.status("back-filling features…") if not as_json else contextlib.nullcontext():
        report = backfill(ws)
    if as_json:
        print_json(dataclasses.asdict(report))
        return
    table = Table(title=f"backfill · {report.feature_set_version}")
    table.add_column("")
    table.add_column("count", justify="right")
    for label, value in (
        ("events ingested since materialisation", report.events_new),
        ("… of them inside the materialised range", report.events_in_range),
        ("attribute versions loaded since", report.attributes_new),
        ("customers affected", report.customers),
        ("rows recomputed", report.rows_recomputed),
        ("rows changed", report.rows_changed),
        ("rows unchanged", report.rows_unchanged),
        ("rows added (customers now known earlier)", report.rows_added),
    ):
        table.add_row(label, fmt_int(value))
    console.print(table)
    hwm = report.high_water_mark.isoformat() if report.high_water_mark else "—"
    console.print(f"high-water mark advanced to {hwm} ({report.seconds:.1f}s)")
