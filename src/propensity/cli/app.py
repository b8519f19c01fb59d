"""The root Typer application and the error handling every command shares."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from propensity import __version__
from propensity.config.errors import PropensityError

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
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Real-time propensity scoring."""


def main() -> None:
    """Entry point: run the app, turning our own errors into a clear message and exit code 1."""
    from propensity.cli import commands  # noqa: F401  (registers the commands)

    try:
        app(standalone_mode=False)
    except PropensityError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(1)
    except Exception as exc:  # click usage errors carry their own exit code (2)
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
