"""Pieces every command shares: the workspace option, progress bars, number formatting."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from propensity.workspace import Workspace

WorkspaceOption = typer.Option(
    Path("."), "--workspace", "-w", help="The project folder (holding propensity.yaml).", show_default=True
)


def open_workspace(path: Path, *, require_spec: bool = False) -> Workspace:
    return Workspace.open(path, require_spec=require_spec)


@contextmanager
def progress_bar(*, transient: bool = True) -> Iterator[Progress]:
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=transient,
    ) as progress:
        yield progress


def fmt_int(n: Any) -> str:
    return f"{int(n):,}"
