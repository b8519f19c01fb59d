"""`propensity models list|show|promote|rollback`: the model registry from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from propensity.cli._common import JsonOption, WorkspaceOption, console, open_workspace, print_json
from propensity.workspace import Workspace

models_app = typer.Typer(help="Model bundles: list, show, promote (gated), roll back.", no_args_is_help=True)


@models_app.command("list")
def list_(workspace: Path = WorkspaceOption, as_json: bool = JsonOption) -> None:
    """List bundles, newest first, with their stage and test AUC per action.

    Example:

        propensity models list -w demo

        propensity models list -w demo --json    # for scripts: the production bundle's id, say
    """
    from propensity.registry.registry import Registry

    registry = Registry(open_workspace(workspace, require_spec=True))
    if as_json:
        print_json([
            {"bundle": e.id, "stage": e.stage, "created_at": e.created_at,
             "feature_set_version": e.manifest.feature_set_version if e.manifest is not None else None,
             "actions": None if e.manifest is None else {
                 a: {"roc_auc": m.metrics["model"]["roc_auc"], "ece": m.metrics["model"]["ece"]}
                 for a, m in sorted(e.manifest.actions.items())}}
            for e in registry.entries()
        ])  # fmt: skip
        return
    table = Table()
    for col in ("bundle", "stage", "created", "feature set", "actions (test AUC / ECE)"):
        table.add_column(col)
    for e in registry.entries():
        acts = e.manifest.actions if e.manifest is not None else {}
        summary = ", ".join(
            f"{a} {m.metrics['model']['roc_auc']:.3f}/{m.metrics['model']['ece']:.3f}"
            for a, m in sorted(acts.items())
        )
        style = "bold green" if e.stage == "production" else None
        table.add_row(e.id, e.stage, e.created_at[:19], e.manifest.feature_set_version if e.manifest is not None else "?",
                      summary or "(unreadable)", style=style)  # fmt: skip
    console.print(table)


@models_app.command()
def show(
    bundle: str = typer.Argument("production", help="Bundle id, unique prefix, or 'production'."),
    workspace: Path = WorkspaceOption,
    as_json: bool = typer.Option(False, "--json", help="Print the verified manifest as JSON."),
) -> None:
    """Show one bundle (verifying its checksums): versions, training window, metrics per action.

    Example:

        propensity models show production -w demo
    """
    from propensity.registry.bundle import verify_bundle
    from propensity.registry.registry import Registry

    registry = Registry(open_workspace(workspace, require_spec=True))
    bundle_id = registry.resolve(bundle)
    manifest = verify_bundle(registry.path(bundle_id))
    if as_json:
        console.print_json(json.dumps(manifest.to_json()))
        return
    stage = next((e.stage for e in registry.entries() if e.id == bundle_id), "?")
    console.print(
        f"[bold]{bundle_id}[/] ({stage}) created {manifest.created_at}, code {manifest.code_version}"
    )
    console.print(
        f"features {manifest.feature_set_version}, training set {manifest.training_set}, data "
        f"{_span(manifest.data)}"
    )
    for name, info in sorted(manifest.actions.items()):
        m, b = info.metrics["model"], info.metrics["baseline"]
        w = info.training_window
        kind = (info.model or {}).get("kind", "lightgbm")
        console.print(
            f"  [bold]{name}[/] ({kind}): AUC {m['roc_auc']:.4f} (baseline {b['roc_auc']:.4f}), ECE {m['ece']:.4f}, "
            f"PR-AUC {m['pr_auc']:.4f}, Brier {m['brier']:.4f}; cutoffs {w['first_cutoff'][:10]} → "
            f"{w['last_cutoff'][:10]}, test from {w['test_start'][:10]}; {len(info.feature_order)} features"
        )


def _span(data: object) -> str:
    """A bundle's data range as text: ``2025-01-06 → 2025-07-05`` (not a raw dict)."""
    if isinstance(data, dict) and "start" in data and "end" in data:
        return f"{str(data['start'])[:16].replace('T', ' ')} → {str(data['end'])[:16].replace('T', ' ')} UTC"
    return str(data)


@models_app.command()
def promote(
    bundle: str = typer.Argument(
        ..., help="The candidate bundle: its id, a unique prefix, or 'latest' (the newest bundle)."
    ),
    workspace: Path = WorkspaceOption,
    force: bool = typer.Option(False, "--force", help="Promote even if the gate fails (needs --reason)."),
    reason: str = typer.Option(None, "--reason", help="Why the gate is overridden; recorded in the history."),
) -> None:
    """Make a candidate the production bundle, if it is not worse than production on the same test window.

    With --force --reason the gate is overridden (recorded): that also replaces a corrupted production bundle,
    which the gate cannot compare with, and can bring an archived bundle back.

    Examples:

        propensity models promote m-3f2a -w demo

        propensity models promote latest -w demo
    """
    from propensity.registry.gate import promote as do_promote
    from propensity.registry.registry import Registry

    ws = open_workspace(workspace, require_spec=True)
    bundle_id = Registry(ws).resolve(bundle)  # the full id, echoed below (not the typed prefix)
    gate = do_promote(ws, bundle_id, force=force, reason=reason)
    for c in gate.checks:
        mark = "[green]ok[/]" if c.passed else "[red]worse[/]"
        cand = "n/a" if c.candidate is None else f"{c.candidate:.4f}"
        prod = "n/a" if c.production is None else f"{c.production:.4f}"
        console.print(f"  {mark} {c.action} {c.metric}: candidate {cand} vs production {prod} ({c.basis})")
    for note in gate.notes:
        console.print(f"  [dim]{note}[/]")
    forced = " [yellow](forced)[/]" if not gate.passed else ""
    console.print(f"[bold green]promoted[/] {bundle_id} to production{forced}")
    compile_production(ws)


def compile_production(ws: Workspace) -> None:
    """Compile the production bundle's trees now, beside the bundle, so no server pays for it at start."""
    import time

    from propensity.registry.registry import Registry
    from propensity.scoring.model import ServingModel

    registry = Registry(ws)
    bundle_id = registry.production()
    if bundle_id is None:
        return
    started = time.perf_counter()
    with console.status("compiling the production models"):
        model = ServingModel.from_bundle_dir(registry.path(bundle_id))
    took = time.perf_counter() - started
    if model.scorer.backend == "native":
        console.print(f"  compiled the scorer in {took:.1f} s (kept beside the bundle)")
    else:
        console.print("  [yellow]no C compiler: this bundle is served by the slower numpy evaluator[/]")


@models_app.command()
def rollback(
    workspace: Path = WorkspaceOption,
    reason: str = typer.Option(None, "--reason", help="Why; recorded in the registry's history."),
) -> None:
    """Move production back to the bundle that was production before (a pointer move, after verifying that
    bundle: a corrupted one is refused and production stays).

    If production itself is corrupted and there is nothing to roll back to, promote a healthy bundle over it:
    `propensity models promote ID --force --reason '...'`.

    Example:

        propensity models rollback -w demo --reason "conversion dropped after the promotion"
    """
    from propensity.registry.registry import Registry

    current, previous = Registry(open_workspace(workspace, require_spec=True)).rollback(reason=reason)
    console.print(f"[bold green]rolled back[/]: production is {previous} again ({current} archived)")
