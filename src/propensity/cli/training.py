"""`propensity train` and `propensity report`: train every action into a candidate bundle; write its report."""

from __future__ import annotations

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
    table = Table(title="test split (latest cutoffs)")
    for col in (
        "action",
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
            name, fmt_int(e["test_rows"]), f"{e['base_rate']:.3f}", f"{e['model']['roc_auc']:.3f}",
            f"{e['baseline']['roc_auc']:.3f}", f"{e['model']['ece']:.4f}", f"{e['baseline']['ece']:.4f}",
            f"{e['quality_lift']:.2f}", oracle,
        )  # fmt: skip
    console.print(table)


@app.command()
def train(
    workspace: Path = WorkspaceOption,
    action: list[str] = typer.Option(None, "--action", "-a", help="Train only this action (repeatable)."),
    engine: str | None = EngineOption,
) -> None:
    """Build training sets, train a calibrated LightGBM model and a logistic baseline per action, and register
    the result as a candidate bundle; writes the evaluation report.

    Example:

        propensity train -w demo

        propensity train -w demo --engine spark    # labels and features on Spark; the same training sets
    """
    from propensity.registry.train import train_project

    ws = open_workspace(workspace, require_spec=True, engine=engine)
    with progress_bar() as bar:
        result = train_project(ws, actions=action or None, progress=training_progress(bar))
    print_summary(result.report_json)
    for name, reason in sorted(result.skipped.items()):
        console.print(f"[yellow]skipped {name}:[/] {reason}")
    console.print(
        f"[bold green]candidate bundle {result.bundle_id}[/] ({result.seconds['total']:.0f}s); report: "
        f"{result.report_paths.get('html')}"
    )
    console.print(f"next: propensity models promote {result.bundle_id} -w {workspace}")


@app.command()
def report(
    workspace: Path = WorkspaceOption,
    bundle: str = typer.Option(
        None, "--bundle", "-b", help="Bundle id or prefix; default: the newest bundle."
    ),
    out: Path = typer.Option(None, "--out", "-o", help="Folder to write into (default .propensity/reports)."),
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
    print_summary(report_json(manifest))
    console.print(f"[bold green]report[/] {paths['html']}\n[bold green]numbers[/] {paths['json']}")
