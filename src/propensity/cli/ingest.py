"""`propensity ingest` and `propensity events …`: load events and look at what was loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.progress import TaskID
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
from propensity.events.ingest import IngestReport, ingest_attributes, ingest_files
from propensity.events.log import open_event_log
from propensity.workspace import Workspace

app = typer.Typer()

events_app = typer.Typer(help="Inspect the event log and its quarantine.", no_args_is_help=True)


def run_ingest(
    workspace: Workspace, paths: list[Path], *, source: str | None = None, force: bool = False,
    accept_schema: bool = False, quiet: bool = False,
) -> IngestReport:  # fmt: skip
    """Ingest ``paths`` (or every declared source and attribute source when empty) with a progress bar."""
    spec = workspace.spec
    if not paths:
        targets: list[tuple[str | None, list[str]]] = [
            (s.name, [str(spec.resolve(s.path))]) for s in spec.sources if s.path
        ]  # stream sources (kafka, redis_stream) are consumed by `propensity stream`
        if not targets and not spec.attributes and not any(s.sql for s in spec.sources):
            raise typer.BadParameter(
                "no files given and the project declares no sources; pass files, or declare `sources:` in "
                "propensity.yaml",
                param_hint="PATHS",
            )
    else:
        targets = [(source, [str(p) for p in paths])]
    report = IngestReport()
    with progress_bar(quiet=quiet) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(file: str, done: int, total: int) -> None:
            if file not in tasks:
                tasks[file] = bar.add_task(Path(file).name, total=total or None)
            bar.update(tasks[file], completed=done, total=total or None)

        for source_name, patterns in targets:
            part = ingest_files(
                workspace, patterns, source=source_name, progress=progress, force=force,
                accept_schema=accept_schema,
            )  # fmt: skip
            report.files.extend(part.files)
        if not paths:
            from propensity.events.warehouse import ingest_sql_source

            for s in spec.sources:
                if s.sql is not None:
                    task = bar.add_task(f"sql: {s.name}", total=None)
                    report.files.extend(ingest_sql_source(workspace, s.name).files)
                    bar.update(task, completed=1, total=1)
            for attribute_source in spec.attributes:
                task = bar.add_task(f"attributes: {attribute_source.name}", total=None)
                n = ingest_attributes(workspace, attribute_source)
                bar.update(task, completed=1, total=1)
                report.attributes[attribute_source.name] = n
                if not quiet:
                    console.print(f"attributes [bold]{attribute_source.name}[/]: {fmt_int(n)} values loaded")
    return report


def report_json(report: IngestReport) -> dict[str, Any]:
    """An ingest report for scripts: totals, each file, the top quarantine reasons, attribute values loaded."""
    return {
        "accepted": report.accepted, "duplicates": report.duplicates, "quarantined": report.quarantined,
        "rows_read": report.rows_read, "skipped_files": report.skipped, "seconds": round(report.seconds, 3),
        "files": [{"path": f.path, "source": f.source, "rows_read": f.rows_read, "accepted": f.accepted,
                   "duplicates": f.duplicates, "quarantined": f.quarantined, "skipped_unchanged": f.skipped_unchanged,
                   "note": f.note or None, "schema_drift": f.schema_drift_text or None,
                   "schema_quarantined": f.schema_quarantined, "seconds": round(f.seconds, 3)}
                  for f in report.files],
        "top_reasons": dict(report.reasons.most_common(5)),
        "attributes": report.attributes,
    }  # fmt: skip


def print_report(report: IngestReport) -> None:
    table = Table(title="Ingest", show_lines=False)
    for col in ("file", "source", "read", "accepted", "duplicates", "quarantined", "seconds"):
        table.add_column(col, justify="left" if col in ("file", "source") else "right")
    for f in report.files:
        name = Path(f.path).name
        if f.skipped_unchanged:
            table.add_row(
                name, f.source, "already", "ingested,", "same", "content", f"{f.seconds:.1f}", style="dim"
            )
            continue
        table.add_row(
            name, f.source, fmt_int(f.rows_read), fmt_int(f.accepted), fmt_int(f.duplicates),
            fmt_int(f.quarantined), f"{f.seconds:.1f}",
        )  # fmt: skip
    console.print(table)
    skipped = sum(1 for f in report.files if f.skipped_unchanged)
    rate = report.rows_read / report.seconds if report.seconds > 0 else 0.0
    console.print(
        f"[green]{fmt_int(report.accepted)} accepted[/], {fmt_int(report.duplicates)} duplicates, "
        f"[{'red' if report.quarantined else 'green'}]{fmt_int(report.quarantined)} quarantined[/]"
        + (
            f"; {skipped} file(s) already ingested with the same content, skipped (--force reads them again)"
            if skipped
            else ""
        )
        + (f" ({rate:,.0f} rows/s)" if rate else "")
    )
    for f in report.files:
        if f.schema_drift is None:
            continue
        if f.schema_quarantined:
            console.print(
                f"[bold red]{Path(f.path).name}: schema drift, file quarantined[/] ({f.schema_drift_text}); if the "
                "change is expected, fix the source's `columns:` mapping if needed, then: propensity ingest "
                "--accept-schema"
            )
        else:
            console.print(f"[yellow]{Path(f.path).name}: schema drift[/] ({f.schema_drift_text}); accepted")
    if report.reasons:
        console.print("[bold]top quarantine reasons[/]")
        for reason, n in report.reasons.most_common(5):
            console.print(f"  {fmt_int(n):>10}  {reason}")
        console.print("see them with [bold]propensity events quarantine[/]")


@app.command()
def ingest(
    paths: list[Path] = typer.Argument(None, help="Files, folders or globs. Default: every declared source."),
    workspace: Path = WorkspaceOption,
    source: str | None = typer.Option(
        None, "--source", "-s", help="Use this declared source's column mapping."
    ),
    strict: bool = typer.Option(False, "--strict", help="Exit with code 1 if any row was quarantined."),
    force: bool = typer.Option(False, "--force", help="Re-read files already ingested (still deduplicated)."),
    accept_schema: bool = typer.Option(
        False,
        "--accept-schema",
        help="Accept a source's changed columns that its `schema_drift: quarantine` policy would quarantine.",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Load events from CSV, Parquet or JSONL files (gzip too) into the workspace's event log.

    Valid rows are appended; duplicates (same **event_id**, or same content when the source has no id) are
    skipped; invalid rows go to the quarantine with their file, row number and reason. Each file is loaded in
    one transaction: interrupted, it is either fully in or not at all, and rerunning completes the job.

    A declared source's columns are compared with the ones last seen: new, missing, renamed and retyped columns
    are reported, and with the source's `schema_drift: quarantine` the file's rows are quarantined until the
    change is accepted with --accept-schema.

    Examples:

        propensity ingest                      # every source declared in propensity.yaml

        propensity ingest events.csv.gz --source web

        propensity ingest 'exports/*.parquet' --strict
    """
    ws = open_workspace(workspace)
    report = run_ingest(
        ws, paths or [], source=source, force=force, accept_schema=accept_schema, quiet=as_json
    )
    if as_json:
        print_json(report_json(report))
    else:
        print_report(report)
    if strict and report.quarantined:
        raise typer.Exit(1)


@events_app.command("summary")
def events_summary(workspace: Path = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """Counts by event type, the time range, customers, and quarantine totals."""
    ws = open_workspace(workspace)
    log = open_event_log(ws)
    with ws.write_lock(), log.connection() as con:
        rows = con.execute(
            """SELECT event_type, count(*), count(DISTINCT customer_id), min(event_time), max(event_time),
                      count(*) FILTER (WHERE available_at > event_time + INTERVAL 1 HOUR)
               FROM events GROUP BY 1 ORDER BY 2 DESC"""
        ).fetchall()
        totals = con.execute("SELECT count(*), count(DISTINCT customer_id) FROM events").fetchall()[0]
        quarantined = con.execute("SELECT count(*) FROM quarantine").fetchall()[0]
        attrs = con.execute(
            "SELECT count(DISTINCT customer_id), count(DISTINCT attribute) FROM attributes"
        ).fetchall()[0]
    assert totals is not None and quarantined is not None and attrs is not None
    if as_json:
        print_json({
            "events": totals[0], "customers": totals[1], "quarantined": quarantined[0],
            "attribute_customers": attrs[0], "attributes": attrs[1],
            "event_types": [{"event_type": t, "events": n, "customers": c, "first": first, "last": last,
                             "late_over_1h": late} for t, n, c, first, last, late in rows],
        })  # fmt: skip
        return
    table = Table(title=f"Event log: {ws.db_path}")
    for col in ("event type", "events", "customers", "first", "last", "late (>1h)"):
        table.add_column(col, justify="left" if col in ("event type", "first", "last") else "right")
    for event_type, n, customers, first, last, late in rows:
        table.add_row(event_type, fmt_int(n), fmt_int(customers), f"{first:%Y-%m-%d %H:%M}",
                      f"{last:%Y-%m-%d %H:%M}", fmt_int(late))  # fmt: skip
    console.print(table)
    console.print(
        f"{fmt_int(totals[0])} events from {fmt_int(totals[1])} customers; "
        f"{fmt_int(quarantined[0])} rows in quarantine; attributes for {fmt_int(attrs[0])} customers "
        f"({attrs[1]} attributes)"
    )


@events_app.command("quarantine")
def events_quarantine(
    workspace: Path = WorkspaceOption,
    limit: int = typer.Option(20, "--limit", "-n", help="How many rows to show."),
    reason: str | None = typer.Option(None, "--reason", help="Only rows whose reason contains this text."),
    as_json: bool = JsonOption,
) -> None:
    """Show quarantined rows: source file, row number, reason and the raw row."""
    ws = open_workspace(workspace)
    log = open_event_log(ws)
    with ws.write_lock(), log.connection() as con:
        rows = con.execute(
            """SELECT source_file, row_number, detail, raw FROM quarantine
               WHERE ? IS NULL OR reason ILIKE '%' || ? || '%'
               ORDER BY quarantined_at DESC, source_file, row_number LIMIT ?""",
            [reason, reason, limit],
        ).fetchall()
    if as_json:
        print_json(
            [{"file": file, "row": row, "reason": detail, "raw": raw} for file, row, detail, raw in rows]
        )
        return
    table = Table(title="Quarantine", show_lines=True)
    for col in ("file", "row", "reason", "raw"):
        table.add_column(col, overflow="fold")
    for file, row, detail, raw in rows:
        table.add_row(Path(file).name if file else "", str(row), detail, (raw or "")[:200])
    console.print(table)


@events_app.command("export")
def events_export(
    to: str = typer.Option(..., "--to", help="The storage to copy the event log into: parquet."),
    path: str = typer.Option(
        ".propensity/events",
        "--path",
        help="The Parquet store's folder (relative to the workspace) or an object-store URI (s3://...).",
    ),
    workspace: Path = WorkspaceOption,
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (for scripts)."),
) -> None:
    """Copy the workspace's DuckDB event log (events, attributes, quarantine) into a Parquet event store.

    The files are partitioned by event date and committed by one manifest, so DuckDB and Spark read the same
    data. The DuckDB tables are kept; point the project at the copy by adding to propensity.yaml:

        storage: {events: parquet, path: .propensity/events}

    Examples:

        propensity events export --to parquet -w demo
        propensity events export --to parquet --path s3://lake/propensity/events -w demo
    """
    import json

    from propensity.events.parquet_log import ParquetEventLog, export_to_parquet

    if to != "parquet":
        raise typer.BadParameter(f"{to!r} is not a storage to export to; use --to parquet", param_hint="--to")
    ws = open_workspace(workspace)
    uri = path if "://" in path else str(ws.spec.resolve(path))
    target = ParquetEventLog(uri, ws.db_path)
    with ws.write_lock():
        try:
            manifest = export_to_parquet(ws.db_path, target)
        except ValueError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    counts = {t: manifest.rows(t) for t in ("events", "attributes", "quarantine")}
    if as_json:
        print(json.dumps({"path": target.location, "version": manifest.version, "rows": counts}))
        return
    console.print(
        f"[green]Exported[/green] {fmt_int(counts['events'])} events, {fmt_int(counts['attributes'])} attribute "
        f"rows and {fmt_int(counts['quarantine'])} quarantined rows to {target.location} "
        f"({len(manifest.tables['events'])} files, manifest version {manifest.version})."
    )
    console.print(f"Next: add to propensity.yaml  [bold]storage: {{events: parquet, path: {path}}}[/bold]")
