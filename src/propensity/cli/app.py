"""The root Typer application and the error handling every command shares."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from propensity.core.errors import PropensityError
from propensity.core.version import __version__

console = Console()
err_console = Console(stderr=True)

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


def _version(value: bool) -> None:
    if value:
        console.print(f"propensity {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Real-time propensity scoring."""


def main() -> None:
    """Entry point: run the app, turning our own errors into a clear message and exit code 1.

    Usage errors (a bad option) exit with 2, as Click does; anything unexpected keeps its traceback.
    """
    from propensity.cli import commands  # noqa: F401  (registers the commands)

    try:
        app()
    except PropensityError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(1)
