"""`propensity train` and `propensity report`: train every action into a candidate bundle; write its report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from propensity.cli._common import (
    EngineOption,
    WorkspaceOption,
    console,
    fmt_int,
    open_workspace,
    print_json,
    progress_bar,
)

app = typer.Typer()

_STAGES = {
    "labels": "labels and eligibility",
    "features": "point-in-time features",
    "train": "training models",
}


def training_progress(bar: Any) -> Any:
    """A ``progress(stage, done, total)`` callback that drives one Rich task per stage."""
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(_STAGES.get(stage, stage), total=max(total, 1))
        bar.update(tasks[stage], completed=done, total=max(total, 1))

    return update


def print_summary(report: dict[str, Any]) -> None:
    table = Table(title="test split (latest cutoffs): the served procedure vs a plain logistic regression")
    for col in (
        "action",
        "model",
        "rows",
        "base rate",
        "AUC",
        "AUC base",
        "ECE",
        "ECE base",
        "lift@10%",
        "oracle AUC",
    ):
        table.add_column(col, justify="right")
    for name, e in sorted((k, v) for k, v in report.items() if k != "_meta"):
        oracle = f"{e['oracle_roc_auc']:.3f}" if "oracle_roc_auc" in e else "—"
        table.add_row(
            name, str(e.get("model_kind", "lightgbm")), fmt_int(e["test_rows"]), f"{e['base_rate']:.3f}",
            f"{e['model']['roc_auc']:.3f}",
            f"{e['baseline']['roc_auc']:.3f}", f"{e['model']['ece']:.4f}", f"{e['baseline']['ece']:.4f}",
            f"{e['quality_lift']:.2f}", oracle,
        )  # fmt: skip
    console.print(table)


def print_splits(report: dict[str, Any]) -> None:
    """Rows and cutoffs per split and what the served model used; warns when under half of the matured rows
    train or when rows were purged."""
    table = Table(title="rows (cutoffs) per split; the served model refits on every matured row")
    for col in (
        "action",
        "train",
        "purged",
        "calibration",
        "test",
        "served: fitted on",
        "served: calibrated on",
    ):
        table.add_column(col, justify="right")
    warnings: list[str] = []
    for name, e in sorted((k, v) for k, v in report.items() if k != "_meta"):
        st = e.get("stages")
        if not st:
            continue

        def cell(s: dict[str, Any] | None) -> str:
            s = s or {}
            return f"{fmt_int(s.get('rows', 0))} ({s.get('cutoffs', 0)})"

        table.add_row(
            name, cell(st["champion"]["train"]), cell(st.get("purged")), cell(st["champion"]["calibration"]),
            cell(st["evaluation"]["test"]), cell(st["served"]["model"]), cell(st["served"]["calibration"]),
        )  # fmt: skip
        warnings.extend(e.get("warnings") or [])
    if table.row_count:
        console.print(table)
    for w in warnings:
        console.print(f"[yellow]warning:[/] {w}")


@app.command()
def train(
    workspace: Path = WorkspaceOption,
    action: list[str] = typer.Option(None, "--action", "-a", help="Train only this action (repeatable)."),
    engine: str | None = EngineOption,
    table: str = typer.Option(
        None,
        "--table",
        help="Train a labelled table instead of the event project's actions: a file (Parquet, CSV, JSONL) or "
        "the name of a `tables:` entry in propensity.yaml.",
    ),
    id_column: str = typer.Option(None, "--id", help="With --table: the id column (default: row numbers)."),
    label: str = typer.Option(
        None, "--label", help="With --table: the label column (1/0, TRUE/FALSE, Yes/No)."
    ),
    positive: str = typer.Option(
        None, "--positive", help="With --table: the label value that means 1 (for labels in other words)."
    ),
    time_column: str = typer.Option(
        None, "--time", help="With --table: a time column; the split is then by time instead of k-fold."
    ),
    folds: int = typer.Option(
        None, "--folds", min=2, max=20, help="With --table: k of the stratified k-fold (5)."
    ),
    exclude: list[str] = typer.Option(
        None, "--exclude", help="With --table: a column not to learn from (repeatable)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the result as JSON (the bundle id for scripts)."
    ),
) -> None:
    """Build training sets; per action search the candidates (a linear model, LightGBM, blends), pick the one
    with the lowest calibrated log loss on the calibration split, evaluate that procedure on the test split and
    in a rolling backtest, refit it on every matured row and register the result as a candidate bundle;
    writes the evaluation report. Prints rows and cutoffs per split, and warns when under half of the
    matured rows fall in the training split or when rows were purged from the evaluation splits.

    With --table, a labelled table (one row per example) is trained as it is: its typed columns are the
    features, no events are invented, and every row is used or reported with the reason it was not. Without
    --time the evaluation is a stratified k-fold whose out-of-fold predictions are pooled (ECE with a 95%
    interval); the bundle's model is then fitted on every row.

    Examples:

        propensity train -w demo

        propensity train -w demo --engine spark    # labels and features on Spark; the same training sets

        propensity train --table sessions.csv --id session_id --label Revenue -w shop

        propensity train --table sessions -w shop --json    # a `tables:` entry; prints the bundle id as JSON
    """
    if table is not None:
        _train_table(workspace, table, id_column, label, positive, time_column, folds, exclude or [], as_json)
        return
    from propensity.registry.train import train_project

    ws = open_workspace(workspace, require_spec=True, engine=engine)
    with progress_bar() as bar:
        result = train_project(ws, actions=action or None, progress=training_progress(bar))
    if as_json:
        warnings = [w for k, e in result.report_json.items() if k != "_meta" for w in e.get("warnings") or []]
        console.print_json(json.dumps({"bundle": result.bundle_id, "skipped": result.skipped, "warnings": warnings,
                                       "report": str(result.report_paths.get("html", ""))}))  # fmt: skip
        return
    print_splits(result.report_json)
    print_summary(result.report_json)
    for name, reason in sorted(result.skipped.items()):
        console.print(f"[yellow]skipped {name}:[/] {reason}")
    console.print(
        f"[bold green]candidate bundle {result.bundle_id}[/] ({result.seconds['total']:.0f}s); report: "
        f"{result.report_paths.get('html')}"
    )
    console.print(f"next: propensity models promote {result.bundle_id} -w {workspace}")


def _train_table(
    workspace: Path,
    table: str,
    id_column: str | None,
    label: str | None,
    positive: str | None,
    time_column: str | None,
    folds: int | None,
    exclude: list[str],
    as_json: bool,
) -> None:
    from propensity.registry.train import train_table

    ws = open_workspace(workspace)
    path = Path(table)
    declared = {t.name for t in ws.spec.tables}
    with progress_bar() as bar:
        bar.add_task(f"table {table}: folds, calibration, final model", total=None)
        if table in declared and not path.exists():
            result = train_table(ws, name=table, id_column=id_column, label=label, positive=positive,
                                 time_column=time_column, folds=folds, exclude=exclude)  # fmt: skip
        else:
            result = train_table(ws, path, id_column=id_column, label=label, positive=positive,
                                 time_column=time_column, folds=folds, exclude=exclude)  # fmt: skip
    summary = result.summary()
    if as_json:
        console.print_json(json.dumps(summary))
        return
    t = Table(title=f"table {result.name}: {summary['split']}")
    for col in ("model", "AUC", "ECE", "ECE 95% CI", "log loss", "rows"):
        t.add_column(col, justify="right")
    for kind, label_ in (("model", "LightGBM"), ("baseline", "logistic baseline")):
        m = summary[kind]
        t.add_row(label_, f"{m['roc_auc']:.4f}", f"{m['ece']:.4f}", f"[{m['ece_ci'][0]:.4f}, {m['ece_ci'][1]:.4f}]",
                  f"{m['log_loss']:.4f}", fmt_int(m["n"]))  # fmt: skip
    console.print(t)
    console.print(f"{fmt_int(summary['input_rows'])} input rows, {fmt_int(summary['rows_used'])} used")
    for reason, n in summary["rejected"].items():
        console.print(f"[yellow]not used {fmt_int(n)}:[/] {reason}")
    for note in summary["notes"]:
        console.print(f"note: {note}")
    console.print(f"features: {', '.join(summary['features'])}")
    console.print(f"[bold green]candidate bundle {result.bundle_id}[/]; report: {summary['report']}")
    console.print(f"out-of-fold predictions: {summary['predictions']}")
    console.print(f"next: propensity models promote {result.bundle_id} -w {workspace}")


@app.command()
def report(
    workspace: Path = WorkspaceOption,
    bundle: str = typer.Option(
        None, "--bundle", "-b", help="Bundle id or prefix; default: the newest bundle."
    ),
    out: Path = typer.Option(None, "--out", "-o", help="Folder to write into (default .propensity/reports)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report's numbers as JSON (for scripts)."),
) -> None:
    """Write the evaluation report of a bundle: one self-contained HTML file and the same numbers as JSON.

    Example:

        propensity report -w demo --out reports/
    """
    from propensity.registry.bundle import verify_bundle
    from propensity.registry.registry import Registry, RegistryError
    from propensity.training.report import report_json, write_report_files

    ws = open_workspace(workspace, require_spec=True)
    registry = Registry(ws)
    if bundle is None:
        entries = registry.entries()
        if not entries:
            raise RegistryError("no bundle yet; train one with `propensity train`")
        bundle = entries[0].id
    bundle_id = registry.resolve(bundle)
    manifest = verify_bundle(registry.path(bundle_id))
    paths = write_report_files(out or ws.state_dir / "reports", manifest)
    if as_json:
        print_json({**report_json(manifest), "files": {k: str(v) for k, v in paths.items()}})
        return
    print_summary(report_json(manifest))
    console.print(f"[bold green]report[/] {paths['html']}\n[bold green]numbers[/] {paths['json']}")
