"""`propensity quickstart`: everything that exists so far, end to end, on the embedded default."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.panel import Panel

from propensity.cli._common import console, fmt_int, progress_bar
from propensity.cli.ingest import print_report, run_ingest
from propensity.config.spec import SPEC_FILENAME
from propensity.datasets.examples import example_spec_text
from propensity.events.log import open_event_log
from propensity.workspace import Workspace

app = typer.Typer()

if TYPE_CHECKING:
    from propensity.registry.train import TrainingResult


@app.command()
def quickstart(
    workspace: Path = typer.Option(
        Path("quickstart-workspace"), "--workspace", "-w", help="Folder to build in."
    ),
    customers: int = typer.Option(
        10_000, "--customers", "-n", min=100, help="Synthetic customers to generate."
    ),
    days: int = typer.Option(
        180, "--days", "-d", min=28, help="Days of history (30-day actions need ~150 to train)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    serve: bool = typer.Option(
        True,
        "--serve/--no-serve",
        help="End by serving the trained model (--no-serve stops before, for scripts).",
    ),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to serve on."),
) -> None:
    """Run the whole pipeline on synthetic data in a fresh workspace: generate → ingest → train → report →
    score → export → serve.

    Every customer is scored into the canonical score table and the run is exported to a file drop (exports/)
    after the validation gates. The first bundle trained is promoted to production and, unless --no-serve,
    served on 127.0.0.1 with a ready-to-paste curl. Needs no services: the event log is a DuckDB file inside the
    workspace. Running it again reuses the generated data and ingests nothing new (ingest is idempotent).

    Example:

        propensity quickstart --workspace demo --customers 5000
    """
    from propensity.datasets.synthetic import generate

    started = time.perf_counter()
    workspace.mkdir(parents=True, exist_ok=True)
    spec_file = workspace / SPEC_FILENAME
    if not spec_file.exists():
        spec_file.write_text(example_spec_text("synthetic"), encoding="utf-8")
        console.print(f"[green]wrote[/] {spec_file} (the synthetic example project)")
    data_dir = workspace / "data" / "synthetic"
    wanted = {"customers": customers, "days": days, "seed": seed}
    marker = data_dir / "quickstart.json"
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        console.print(f"reusing synthetic data in {data_dir}")
    else:
        console.rule("1. generate synthetic events")
        with progress_bar() as bar:
            task = bar.add_task("generating customers", total=customers)
            summary = generate(
                data_dir, customers=customers, days=days, seed=seed,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )  # fmt: skip
        marker.write_text(json.dumps(wanted))
        console.print(
            f"{fmt_int(summary.events)} events ({fmt_int(summary.duplicates)} planted duplicates, "
            f"{fmt_int(summary.late_events)} late) for {fmt_int(summary.customers)} customers, "
            f"{summary.start:%Y-%m-%d} → {summary.end:%Y-%m-%d}"
        )

    console.rule("2. ingest into the event log")
    ws = Workspace.open(workspace, require_spec=True)
    report = run_ingest(ws, [])
    print_report(report)

    console.rule("3. summary")
    log = open_event_log(ws)
    with ws.write_lock(), log.connection() as con:
        by_type = con.execute("SELECT event_type, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC").fetchall()
        totals = con.execute(
            "SELECT count(*), count(DISTINCT customer_id), min(event_time), max(event_time) FROM events"
        ).fetchall()[0]
    assert totals is not None
    lines = [f"{fmt_int(n):>12}  {t}" for t, n in by_type]
    console.print(
        Panel(
            "\n".join(lines) + f"\n\n{fmt_int(totals[0])} events, {fmt_int(totals[1])} customers, "
            f"{totals[2]:%Y-%m-%d} → {totals[3]:%Y-%m-%d}",
            title="event log",
        )
    )
    trained = _train(ws)
    if trained is not None:
        _promote_first(ws, trained)
    # ---- batch scoring (propensity.cli.scoring): every customer scored as of the data's end, stored ----
    from propensity.cli.scoring import quickstart_scores

    quickstart_scores(ws, trained, as_of=totals[3])
    # ---- end of batch scoring ----
    # ---- export (propensity.cli.activation): the stored run through the gates into the file drop ----
    from propensity.cli.activation import quickstart_export

    quickstart_export(ws)
    # ---- end of export ----

    elapsed = time.perf_counter() - started
    console.print(f"[bold green]quickstart finished in {elapsed:.0f}s[/] — workspace: {ws.root}")
    look = [
        f"  {spec_file}   the project: sources, attributes, features and actions",
        f"  {data_dir}/oracle.parquet   the true probability of each action per customer and cutoff",
    ]
    run_next = [
        f"propensity events summary -w {workspace}",
        f"propensity features show <customer_id> -w {workspace} --explain",
    ]
    if trained is not None:
        look.insert(0, f"  {trained.report_paths.get('html')}   the evaluation report (open it in a browser)")
        run_next += [
            f"propensity models list -w {workspace}",
            # The synthetic project says `clock: data`: "now" is the event log's end, not today.
            f"propensity score -w {workspace}   # another run (as of the data's end: clock: data), then "
            f"`propensity activate -w {workspace}`",
            f"propensity monitor -w {workspace}",
        ]
    console.print("look at:\n" + "\n".join(look))
    console.print("run next:\n" + "\n".join(f"  {line}" for line in run_next))
    if trained is not None and serve:
        _serve(ws, trained, port)


def _train(ws: Workspace) -> TrainingResult | None:
    """Train every action and write the report, when the project declares features and actions."""
    from propensity.cli.training import print_summary, training_progress
    from propensity.registry.train import train_project

    if not ws.spec.features or not ws.spec.actions:
        console.print("[yellow]the project declares no features or actions yet: skipping training[/]")
        return None
    console.rule("4. train calibrated models, one per action")
    with progress_bar() as bar:
        result = train_project(ws, progress=training_progress(bar))
    print_summary(result.report_json)
    for name, reason in sorted(result.skipped.items()):
        console.print(f"[yellow]skipped {name}:[/] {reason}")
    console.print(f"candidate bundle [bold]{result.bundle_id}[/]; report: {result.report_paths.get('html')}")
    return result


def _promote_first(ws: Workspace, trained: TrainingResult) -> None:
    """Put the quickstart's bundle in production when there is none (the first one needs no gate)."""
    from propensity.cli.models import compile_production
    from propensity.registry.gate import promote
    from propensity.registry.registry import Registry

    if Registry(ws).production() is None:
        promote(ws, trained.bundle_id)
        console.print(f"promoted [bold]{trained.bundle_id}[/] to production")
        compile_production(ws)
    else:
        console.print(
            f"production stays {Registry(ws).production()}; promote the new candidate with "
            f"`propensity models promote {trained.bundle_id} -w {ws.root}`"
        )


def _serve(ws: Workspace, trained: TrainingResult, port: int) -> None:
    """Serve the production bundle until Ctrl-C; the curl is printed once it answers."""
    from propensity.cli.serve import run_server

    console.rule("5. serve")
    url = f"http://127.0.0.1:{port}/v1/predict?customer_id=c42&explain=true"

    def ready() -> None:
        console.print(
            f"[bold green]ready[/]: try it (another terminal):\n  curl '{url}'\nstop the server with Ctrl-C"
        )

    run_server(ws, host="127.0.0.1", port=port, ready_url=url, on_ready=ready)
