"""`propensity console`: the web console for a workspace, without the scoring API."""

from __future__ import annotations

from pathlib import Path

import typer

from propensity.cli._common import WorkspaceOption, console, open_workspace

app = typer.Typer()


@app.command("console")
def console_command(
    workspace: Path = WorkspaceOption,
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8080, min=0, max=65535, help="TCP port."),
    api_keys: Path | None = typer.Option(
        None,
        "--api-keys",
        help="JSON file of API keys with scopes; else $PROPENSITY_API_KEYS. Sign in with a key that has the "
        "console scope (read-only) or admin (promote, roll back, save targets); customers opens the lookup and "
        "identifiers shows ids unmasked. With no keys, authentication is off (local use only).",
    ),
    log_level: str = typer.Option(
        "warning", help="uvicorn's log level (access logs stay off: URLs hold ids)."
    ),
) -> None:
    """Serve the web console for a workspace that has no running API: overview, targeting (threshold, cost and
    profit; save a named target that `propensity activate` uses), models (curves, champion and challengers,
    promote and roll back), monitoring, experiments and customer lookup.

    `propensity serve` serves the same console at /console beside the API (and then also scores customers
    live on the lookup page and swaps a promoted model in at once).

    Example:

        PROPENSITY_API_KEYS="ana:console:k1,ops:admin+customers:k2" propensity console -w demo
        open http://127.0.0.1:8080/console
    """
    import os

    import uvicorn

    from propensity.server.console import create_console_app
    from propensity.serving.auth import KeyRing

    ws = open_workspace(workspace, require_spec=True)
    keys = KeyRing.configured(api_keys, os.environ.get("PROPENSITY_API_KEYS"))
    if keys.enabled:
        console.print(f"sign in with one of these keys: {', '.join(k.name for k in keys.keys)}")
    else:
        console.print(
            "[yellow]authentication is off[/] (no --api-keys or PROPENSITY_API_KEYS): local use only"
        )
    console.print(f"[green]console[/] on http://{host}:{port}/console  (Ctrl-C stops it)")
    uvicorn.run(create_console_app(ws, keys), host=host, port=port, log_level=log_level, access_log=False)
