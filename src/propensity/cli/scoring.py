"""`propensity score`: batch scoring into the canonical score table; `propensity score-runs`: the runs so far."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.compute as pc
import typer
from rich.table import Table

from propensity.cli._common import (
    EngineOption,
    WorkspaceOption,
    console,
    fmt_int,
    open_workspace,
    parse_time,
    progress_bar,
    warn_stale,
)
from propensity.core.errors import PropensityError

app = typer.Typer()

if TYPE_CHECKING:
    from propensity.registry.train import TrainingResult
    from propensity.scoring.batch import BatchResult
    from propensity.workspace import Workspace


def print_run_summary(result: BatchResult) -> None:
    """Rows, and per action: eligible customers, segment shares and how often it is the next best action."""
    rows, run = result.rows, result.run
    table = Table(title=f"run {run.run_id}: {fmt_int(run.rows)} rows, as of {run.as_of:%Y-%m-%d %H:%M} UTC")
    for col in ("action", "eligible", "mean score", "segments (share of eligible)", "next best", "source"):
        table.add_column(col, justify="left" if col.startswith(("action", "segments", "source")) else "right")
    actions = rows.column("action")
    nba = rows.column("next_best_action")
    fallback = set(run.details.get("fallback_actions", []))
    customers = max(1, int(run.details.get("customers", 0)))
    for a in run.details.get("actions", []):
        part = rows.filter(pc.equal(actions, a))
        ok = part.filter(part.column("eligible"))
        counts = {
            str(r["values"]): int(r["counts"]) for r in pc.value_counts(ok.column("segment")).to_pylist()
        }
        names = list(reversed(run.segment_names.get(a, ())))
        shares = "  ".join(f"{n} {counts.get(n, 0) / max(1, ok.num_rows):.0%}" for n in names)
        score = ok.column("score").to_numpy() if ok.num_rows else np.zeros(0)
        chosen = int(pc.sum(pc.equal(part.column("next_best_action"), a)).as_py() or 0)
        table.add_row(
            a, fmt_int(ok.num_rows), f"{score.mean():.3f}" if score.size else "—", shares or "—",
            f"{chosen / customers:.0%}", "fallback (no model)" if a in fallback else "model",
        )  # fmt: skip
    console.print(table)
    without = rows.filter(pc.is_null(nba)).num_rows
    console.print(
        f"{fmt_int(run.details.get('customers', 0))} customers; next best action for "
        f"{fmt_int(len(pc.unique(rows.filter(pc.is_valid(nba)).column('customer_id'))))}"
        f" ({fmt_int(without)} rows without one); valid until {run.expiration_at:%Y-%m-%d %H:%M} UTC",
        highlight=False,
    )


def _scoring_progress(bar: Any) -> Any:
    task = bar.add_task("scoring customers", total=1)

    def update(_stage: str, done: int, total: int) -> None:
        bar.update(task, completed=done, total=max(total, 1))

    return update


@app.command()
def score(
    workspace: Path = WorkspaceOption,
    as_of: str | None = typer.Option(
        None,
        "--as-of",
        help="Score as of this time (ISO 8601; a date alone is midnight in the project's timezone); default: "
        "now, or the event log's end when propensity.yaml says `clock: data`.",
    ),
    action: list[str] = typer.Option(None, "--action", "-a", help="Score only this action (repeatable)."),
    customers_file: Path | None = typer.Option(
        None, "--customers", help="Score only the customer ids in this file (one per line)."
    ),
    bundle: str | None = typer.Option(None, "--bundle", help="A bundle id or prefix instead of production."),
    engine: str | None = EngineOption,
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Write the rows to this Parquet (or .csv) file for analysis instead of the score store: checked "
        "against the data contract, never published (gates are for `propensity activate`).",
    ),
    triggers: bool = typer.Option(
        False,
        "--triggers",
        help="Score every trigger (campaign send) of the triggered actions visible in [--from, --to), each as "
        "of its own send time; rows carry trigger_id and as_of.",
    ),
    start: str | None = typer.Option(None, "--from", help="With --triggers: the first send time (ISO 8601)."),
    end: str | None = typer.Option(
        None, "--to", help="With --triggers: sends before this time (ISO 8601); default --as-of, else now."
    ),
    rows_file: Path | None = typer.Option(
        None,
        "--rows",
        help="Score the rows of this file (Parquet, CSV, JSONL) as they are: they carry the bundle's features "
        "(a labelled-table bundle's columns). Checked against the bundle's feature schema; stored as a run, and "
        "with --out written to the file too.",
    ),
    id_column: str | None = typer.Option(
        None,
        "--id",
        help="With --rows: the id column (default: id, customer_id or the table's id; else row numbers).",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the run (id, rows, model, segments, ...) as JSON instead of tables."
    ),
) -> None:
    """Score every known customer for every action into the score table, as one new run.

    The production bundle scores each eligible customer as of --as-of with point-in-time features (default:
    now; the event log's end under `clock: data`; a warning says when the newest event is older than the
    freshness threshold, and `propensity activate` refuses such a run); actions without a model get the rule-based fallback. Segments, reason codes, holdout groups and
    the decision policy (next best action) are added, the rows are checked against the data contract, and the
    run is written to the store in the `scoring` section (the workspace's DuckDB file by default). A run that
    breaks the contract is not written (exit code 1). Every row carries the as_of it describes.

    With --out the rows go to a file for analysis (a backtest, a scoring as of an earlier time) and not to the
    store: nothing is published. With --triggers a triggered action (respond) is scored once per send in a
    period, each send as of the moment it became visible, as training saw it.

    Examples:

        propensity score -w demo

        propensity score -w demo --as-of 2025-06-30 --action buy_7d --out scores-2025-06-30.parquet

        propensity score -w demo --triggers --from 2025-06-01 --to 2025-07-01 --out sends.parquet

        propensity score -w demo --engine spark    # features and model scores on Spark (mapInArrow)

        propensity score --rows new_sessions.parquet --out scored.parquet -w shop   # a labelled table's bundle
    """
    from propensity.scoring.batch import score_and_store, score_batch, score_triggers, write_scores_file
    from propensity.scoring.policy import read_id_file

    if rows_file is not None:
        _score_rows_file(workspace, rows_file, id_column, bundle, out, as_of, as_json)
        return
    ws = open_workspace(workspace, require_spec=True, engine=engine)
    zone = ws.spec.timezone
    when = parse_time(as_of, zone)
    if triggers:
        if start is None:
            raise PropensityError(
                "--triggers needs --from (the first send time to score), e.g. --from 2025-06-01"
            )
        if customers_file is not None:
            raise PropensityError(
                "--customers does not apply to --triggers (every send in the period is scored)"
            )
        t0 = parse_time(start, zone, "--from")
        t1 = parse_time(end, zone, "--to") or when or datetime.now(UTC)
        assert t0 is not None
        with progress_bar() as bar:
            result = score_triggers(
                ws, start=t0, end=t1, actions=action or None, bundle=bundle, progress=_scoring_progress(bar)
            )
    else:
        if start is not None or end is not None:
            raise PropensityError("--from and --to go with --triggers; score a single time with --as-of")
        ids = sorted(read_id_file(customers_file)) if customers_file is not None else None
        with progress_bar() as bar:
            scorer = score_batch if out is not None else score_and_store
            result = scorer(
                ws, as_of=when, customers=ids, actions=action or None, bundle=bundle,
                progress=_scoring_progress(bar),
            )  # fmt: skip
    if not triggers:
        warn_stale(result.run.details.get("stale_data"))  # stderr: --json's stdout stays JSON
    if not as_json:
        if triggers:
            _print_trigger_summary(result)
        else:
            print_run_summary(result)
    if out is not None:
        path = write_scores_file(result, out)
        if as_json:
            console.print_json(
                json.dumps({**result.run.to_json(), "out": str(path), "stored": False}, default=str)
            )
            return
        console.print(
            f"[bold green]wrote {fmt_int(result.rows.num_rows)} rows[/] of run {result.run.run_id} to {path} "
            f"(contract {result.run.contract_version}; not stored, not published)"
        )
        return
    if triggers:
        from propensity.core.contract import ContractError, validate_rows
        from propensity.scoring.score_store import open_score_store

        problems = validate_rows(result.rows)
        if problems:
            raise ContractError(problems)
        open_score_store(ws).write_run(result.rows, result.run)
    if as_json:
        console.print_json(json.dumps({**result.run.to_json(), "stored": True}, default=str))
        return
    seconds = result.run.details.get("seconds", {})
    console.print(
        f"[bold green]stored run {result.run.run_id}[/] in the {ws.spec.scoring.store} store "
        f"({seconds.get('total', 0.0) + seconds.get('write', 0.0):.1f}s); list runs with "
        f"`propensity score-runs -w {workspace}`"
    )


def _score_rows_file(
    workspace: Path,
    rows_file: Path,
    id_column: str | None,
    bundle: str | None,
    out: Path | None,
    as_of: str | None,
    as_json: bool = False,
) -> None:
    from propensity.core.contract import ContractError, validate_rows
    from propensity.events.tables import read_table_file
    from propensity.scoring.batch import write_scores_file
    from propensity.scoring.score_store import open_score_store
    from propensity.scoring.supplied import score_supplied

    ws = open_workspace(workspace)
    when = parse_time(as_of, ws.spec.timezone)
    result, ignored = score_supplied(
        ws, read_table_file(rows_file), bundle=bundle, id_column=id_column, as_of=when
    )
    problems = validate_rows(result.rows)
    if problems:
        raise ContractError(problems)
    open_score_store(ws).write_run(result.rows, result.run)
    if result.monitoring_sample is not None:  # what `propensity monitor` compares with the training rows
        from propensity.registry.table_samples import keep_sample, supplied_sample_path

        keep_sample(result.monitoring_sample, supplied_sample_path(ws, result.run.run_id))
    if out is not None:
        write_scores_file(result, out)
    if as_json:
        console.print_json(json.dumps({**result.run.to_json(), "ignored_columns": ignored,
                                       "out": str(out) if out else None}, default=str))  # fmt: skip
        return
    print_run_summary(result)
    if ignored:
        console.print(f"columns not used by the bundle: {', '.join(ignored)}")
    console.print(f"[bold green]stored run {result.run.run_id}[/] ({fmt_int(result.rows.num_rows)} rows) in the "
                  f"{ws.spec.scoring.store} store")  # fmt: skip
    if out is not None:
        console.print(f"[bold green]wrote[/] the same rows to {out}")


def _print_trigger_summary(result: BatchResult) -> None:
    rows, run = result.rows, result.run
    span = run.details.get("triggers", {})
    table = Table(
        title=f"run {run.run_id}: {fmt_int(run.rows)} sends scored, {span.get('from')} → {span.get('to')}"
    )
    for col in ("action", "sends", "customers", "mean score", "source"):
        table.add_column(col, justify="left" if col in ("action", "source") else "right")
    fallback = set(run.details.get("fallback_actions", []))
    for a in run.details.get("actions", []):
        part = rows.filter(pc.equal(rows.column("action"), a))
        score = part.column("score").to_numpy(zero_copy_only=False) if part.num_rows else np.zeros(0)
        table.add_row(
            a, fmt_int(part.num_rows), fmt_int(len(pc.unique(part.column("customer_id"))) if part.num_rows else 0),
            f"{np.nanmean(score):.3f}" if score.size else "—", "fallback (no model)" if a in fallback else "model",
        )  # fmt: skip
    console.print(table)


@app.command("score-runs")
def score_runs(
    workspace: Path = WorkspaceOption,
    limit: int = typer.Option(10, "--limit", "-n", min=1, help="How many runs, newest first."),
    as_json: bool = typer.Option(False, "--json", help="Print the runs as JSON (for scripts)."),
) -> None:
    """List the scoring runs in the score store, newest first.

    Example:

        propensity score-runs -w demo

        propensity score-runs -w demo --json -n 1    # the latest run's id, rows, model, ... for a script
    """
    from propensity.scoring.score_store import open_score_store

    ws = open_workspace(workspace)  # a labelled-table project may have no propensity.yaml
    runs = open_score_store(ws).runs(limit)
    if as_json:
        console.print_json(json.dumps([r.to_json() for r in runs], default=str))
        return
    if not runs:
        console.print("no scoring runs yet; run `propensity score`")
        return
    table = Table(title=f"scoring runs ({ws.spec.scoring.store} store)")
    for col in ("run", "scored at", "as of", "rows", "model", "status", "contract"):
        table.add_column(col)
    for r in runs:
        table.add_row(
            r.run_id, f"{r.scored_at:%Y-%m-%d %H:%M}", f"{r.as_of:%Y-%m-%d %H:%M}", fmt_int(r.rows),
            r.model_version, r.status, r.contract_version,
        )  # fmt: skip
    console.print(table)


def quickstart_scores(ws: Workspace, trained: TrainingResult | None, as_of: datetime) -> BatchResult | None:
    """Quickstart's scoring step: every customer scored as of the end of the synthetic data and stored.

    Uses the production bundle, or the bundle just trained while none is in production yet.
    """
    from propensity.registry.registry import Registry
    from propensity.scoring.batch import score_and_store

    if trained is None:
        return None
    console.rule("batch scores: every customer × action into the score table")
    bundle = None if Registry(ws).production() is not None else trained.bundle_id
    with progress_bar() as bar:
        result = score_and_store(ws, as_of=as_of, bundle=bundle, progress=_scoring_progress(bar))
    print_run_summary(result)
    console.print(f"stored run [bold]{result.run.run_id}[/] in the {ws.spec.scoring.store} store")
    return result
