"""`propensity init`: start a project."""

from __future__ import annotations

from pathlib import Path

import typer

from propensity.cli._common import console
from propensity.config.spec import SPEC_FILENAME
from propensity.core.errors import PropensityError
from propensity.datasets.examples import example_spec_text

app = typer.Typer()


@app.command()
def init(
    directory: Path = typer.Argument(Path("."), help="Folder to create the project in (created if missing)."),
    example: str = typer.Option(
        "blank", "--example", "-e", help="blank (a commented template), synthetic or completejourney."
    ),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing propensity.yaml."),
) -> None:
    """Write a commented **propensity.yaml** to start a project.

    Examples:

        propensity init my-project

        propensity init demo --example synthetic
    """
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / SPEC_FILENAME
    if target.exists() and not force:
        raise PropensityError(f"{target} already exists; pass --force to overwrite it")
    target.write_text(example_spec_text(example), encoding="utf-8")
    console.print(f"[green]wrote[/] {target}")
    w = "" if directory == Path(".") else f" -w {directory}"
    if example == "synthetic":
        hint = (
            f"next: generate its data with [bold]propensity datasets synthetic --customers 1000 --days 180 "
            f"--out {directory / 'data' / 'synthetic'}[/], then [bold]propensity ingest{w}[/]"
        )
    elif example == "completejourney":
        hint = (
            f"next: export its data with [bold]propensity datasets completejourney --out "
            f"{directory / 'data' / 'completejourney'}[/], then [bold]propensity ingest{w}[/]"
        )
    else:
        hint = (
            f"next: edit its `sources:` to point at your event files, then run [bold]propensity ingest{w}[/]"
        )
    console.print(hint, highlight=False)


@app.command()
def schema(
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write the JSON Schema to this file instead of printing it."
    ),
    docs: Path | None = typer.Option(
        None, "--docs", help="Write the Markdown reference of every key (docs/configuration.md) to this file."
    ),
) -> None:
    """The JSON Schema of **propensity.yaml**, for editors (completion and checks as you type), or with --docs
    the Markdown reference of every key.

    Examples:

        propensity schema --out propensity.schema.json

        propensity schema --docs docs/configuration.md

    With the YAML language server (VS Code's YAML extension, and others), put this line at the top of
    propensity.yaml: `# yaml-language-server: $schema=propensity.schema.json`
    """
    import json

    from propensity.config.reference import json_schema, reference_markdown

    if docs is not None:
        docs.write_text(reference_markdown(), encoding="utf-8")
        console.print(f"[green]wrote[/] {docs}", highlight=False)
    text = json.dumps(json_schema(), indent=2) + "\n"
    if out is not None:
        out.write_text(text, encoding="utf-8")
        console.print(f"[green]wrote[/] {out}", highlight=False)
    elif docs is None:
        typer.echo(text, nl=False)
