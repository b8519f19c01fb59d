"""The root Typer application: every command module's sub-app, composed with ``add_typer``, and the error
handling every command shares.

Each module under ``propensity.cli`` declares its own Typer app (top-level commands, merged here) and its
command groups (added here by name); none imports this module, so the CLI has no import cycle (import-linter
checks it).
"""

from __future__ import annotations

import sys

import typer

from propensity.cli import (
    activation,
    datasets,
    experiments,
    features,
    ingest,
    models,
    monitoring,
    project,
    quickstart,
    scoring,
    serve,
    stream,
    training,
    web,
)
from propensity.cli._common import WIDE, console, err_console
from propensity.core.errors import PropensityError
from propensity.core.logs import configure_logging
from propensity.core.version import __version__

app = typer.Typer(
    name="propensity",
    help=(
        "Real-time propensity scoring: events → features → models → calibrated scores → activation.\n\n"
        "Start with `propensity quickstart` (synthetic data, end to end), or `propensity init` in a folder of "
        "your own to write a commented propensity.yaml."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)

# Top-level commands, in the order `propensity --help` lists them.
for module in (ingest, project, quickstart, serve, stream, web, training, activation, scoring):
    app.add_typer(module.app)
# Command groups.
app.add_typer(datasets.datasets_app, name="datasets")
app.add_typer(features.features_app, name="features")
app.add_typer(ingest.events_app, name="events")
app.add_typer(models.models_app, name="models")
app.add_typer(activation.destinations_app, name="destinations")
app.add_typer(experiments.experiments_app, name="experiments")
app.add_typer(experiments.retrain_app, name="retrain")
app.add_typer(monitoring.monitor_app, name="monitor")


def _version(value: bool) -> None:
    if value:
        console.print(f"propensity {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
    log_format: str = typer.Option(
        "text",
        "--log-format",
        envvar="PROPENSITY_LOG_FORMAT",
        help="Log records on stderr as text, or json (one object per line, for log shippers).",
    ),
    log_level: str = typer.Option(
        "warning", "--log-level", envvar="PROPENSITY_LOG_LEVEL", help="debug, info, warning or error."
    ),
    wide: bool = typer.Option(
        False,
        "--wide",
        help="Print tables at their full width instead of fitting them to the terminal (for wide terminals, "
        "`less -S`, files).",
    ),
) -> None:
    """Real-time propensity scoring."""
    try:
        configure_logging(log_format, log_level)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if wide:
        console.width = err_console.width = WIDE


def main() -> None:
    """Entry point: run the app, turning our own errors into a clear message and exit code 1.

    Usage errors (a bad option) exit with 2, as Click does; anything unexpected keeps its traceback.
    """
    try:
        app()
    except PropensityError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(1)
