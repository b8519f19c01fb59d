"""`propensity datasets …`: the data sets propensity is developed and measured on."""

from __future__ import annotations

from pathlib import Path

import typer

from propensity.cli._common import console, fmt_int, progress_bar

datasets_app = typer.Typer(help="Generate or load the example data sets.", no_args_is_help=True)


@datasets_app.command("synthetic")
def synthetic(
    out: Path = typer.Option(Path("data/synthetic"), "--out", "-o", help="Folder to write into."),
    customers: int = typer.Option(20_000, "--customers", "-n", min=1, help="Number of customers."),
    days: int = typer.Option(90, "--days", "-d", min=14, help="Days of history."),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same files."),
) -> None:
    """Generate synthetic events for all five actions, with the true probabilities (the oracle).

    Writes events/*.parquet, customers.parquet, oracle.parquet and summary.json; see docs/synthetic-data.md.

    Example:

        propensity datasets synthetic --customers 50000 --days 120 --seed 7 --out data/synthetic
    """
    from propensity.datasets.synthetic import generate

    with progress_bar() as bar:
        task = bar.add_task("generating customers", total=customers)
        summary = generate(
            out, customers=customers, days=days, seed=seed,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )  # fmt: skip
    console.print(
        f"[green]wrote[/] {fmt_int(summary.events)} events for {fmt_int(summary.customers)} customers "
        f"({summary.start:%Y-%m-%d} → {summary.end:%Y-%m-%d}) to {out} in {summary.seconds:.1f}s"
    )
    console.print(
        "next: a project made by [bold]propensity init DIR --example synthetic[/] reads DIR/data/synthetic/; "
        "generate into that folder (or move this one there), then [bold]propensity ingest -w DIR[/]"
    )


@datasets_app.command("completejourney")
def completejourney(
    out: Path = typer.Option(Path("data/completejourney"), "--out", "-o", help="Folder to write into."),
) -> None:
    """Export Dunnhumby's "The Complete Journey" (2,469 households, a year of grocery baskets) as events.

    Transactions become purchases, campaign receipts campaign_sent, coupon redemptions coupon_redemption;
    demographics become customer attributes. See docs/completejourney.md.

    Example:

        propensity datasets completejourney --out data/completejourney
    """
    from propensity.datasets.completejourney import export_completejourney

    with progress_bar() as bar:
        task = bar.add_task("exporting", total=None)
        summary = export_completejourney(out, progress=lambda step: bar.update(task, description=step))
    written = sum(summary.events_written.values())
    console.print(
        f"[green]wrote[/] {fmt_int(written)} events for {fmt_int(summary.households)} households to {out}"
    )
    console.print(
        "next: a project made by [bold]propensity init DIR --example completejourney[/] reads "
        "DIR/data/completejourney/; export into that folder, then [bold]propensity ingest -w DIR[/]"
    )
