"""Pieces every command shares: the consoles, the workspace option, --as-of parsing, progress bars, number
formatting. Command modules import from here, never from :mod:`propensity.cli.app` (which imports them)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from propensity.config.calendar import local_time
from propensity.core.errors import PropensityError
from propensity.workspace import Workspace


class _Console(Console):
    """Rich's console, printing tables so that no name is cut: a cell too long for its column wraps (folds)
    instead of ending in an ellipsis. ``--wide`` lifts the width limit altogether."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        for obj in objects:
            if isinstance(obj, Table):
                for column in obj.columns:
                    if column.overflow == "ellipsis":
                        column.overflow = "fold"
        super().print(*objects, **kwargs)


console = _Console()
err_console = _Console(stderr=True)
WIDE = 1_000  # columns, with --wide: wider than any table here

WorkspaceOption = typer.Option(
    Path("."), "--workspace", "-w", help="The project folder (holding propensity.yaml).", show_default=True
)
JsonOption = typer.Option(False, "--json", help="Print the result as JSON (for scripts) instead of tables.")


def print_json(data: Any) -> None:
    """``data`` as one JSON document on stdout: times in ISO 8601, NaN as null, anything else as its text."""
    import orjson

    option = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    typer.echo(orjson.dumps(data, default=str, option=option).decode())


def open_workspace(path: Path, *, require_spec: bool = False, engine: str | None = None) -> Workspace:
    """The workspace; ``engine`` (``--engine``) overrides its spec's ``engine:`` for this command."""
    ws = Workspace.open(path, require_spec=require_spec)
    if engine is not None:
        if engine not in ("duckdb", "spark"):
            raise typer.BadParameter(
                f"{engine!r} is not an engine; use duckdb or spark", param_hint="--engine"
            )
        ws = dataclasses.replace(ws, spec=ws.spec.model_copy(update={"engine": engine}))
    return ws


EngineOption = typer.Option(
    None,
    "--engine",
    help="What computes features, labels and scores: duckdb (one machine) or spark (spark.master in the spec, "
    "or PROPENSITY_SPARK_MASTER; local[*] by default). Default: the spec's engine.",
)


@contextmanager
def progress_bar(*, transient: bool = True, quiet: bool = False) -> Iterator[Progress]:
    """A progress bar on the console; ``quiet`` (``--json``) shows none, so stdout holds only the JSON."""
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=transient,
        disable=quiet,
    ) as progress:
        yield progress


def parse_time(value: str | None, zone: str = "UTC", option: str = "--as-of") -> datetime | None:
    """A time given on the command line: ISO 8601, a date or a date and time; without an offset it is a wall-clock
    time in the project's ``zone`` (a date alone: its midnight). Returned in UTC."""
    if value is None:
        return None
    try:
        return local_time(value, zone)
    except ValueError:
        raise PropensityError(
            f"{option}: {value!r} is not a date or time (ISO 8601); use e.g. 2026-03-01 (midnight in the project's "
            f"time zone, {zone}) or 2026-03-01T08:00:00Z"
        ) from None


def warn_stale(message: str | None) -> None:
    """Say, prominently, that a command worked on stale data (see :mod:`propensity.core.clock`): a panel on
    stderr, or a warning record where logs are JSON (`--log-format json`: stderr holds only JSON lines)."""
    if not message:
        return
    from propensity.core.logs import current_format

    if current_format() == "json":
        import logging

        logging.getLogger("propensity.clock").warning("stale data: %s", message)
        return
    from rich.markup import escape
    from rich.panel import Panel

    err_console.print(
        Panel(
            escape(message[0].upper() + message[1:]),
            title="stale data",
            border_style="bold yellow",
            width=min(err_console.width, 110),
        )
    )


def fmt_int(n: Any) -> str:
    return f"{int(n):,}"


def parse_as_of(text: str, zone: str = "UTC") -> datetime:
    """An ISO date or datetime; without an offset, a wall-clock time in ``zone`` (the project's)."""
    t = parse_time(text.strip(), zone)
    assert t is not None
    return t
