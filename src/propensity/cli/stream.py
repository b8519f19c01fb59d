"""`propensity stream`: consume the project's Kafka topics and Redis streams into the event log."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import typer

from propensity.cli._common import WorkspaceOption, console, fmt_int, open_workspace

app = typer.Typer()


@app.command()
def stream(
    workspace: Path = WorkspaceOption,
    source: list[str] = typer.Option(
        [], "--source", "-s", help="Consume only this stream source (repeatable)."
    ),
    store: str | None = typer.Option(
        None,
        "--store",
        help="Also apply events to this online store at once (a Redis URL; default: serving.online_store when it "
        "is Redis). With the in-memory store, servers take stream events from the log at their next sync.",
    ),
    until_idle: float | None = typer.Option(
        None,
        help="Stop once every source has been quiet this many seconds with no lag (for batch jobs, tests).",
    ),
    max_seconds: float | None = typer.Option(None, help="Stop after this many seconds."),
    json_out: bool = typer.Option(False, "--json", help="Print the final counts as JSON."),
) -> None:
    """Consume the stream sources declared in propensity.yaml (kafka:, redis_stream:) into the event log.

    Each batch is validated like a file, made durable, and only then are its offsets committed (Kafka) or its
    entries acknowledged (Redis XACK): a crash at any point loses nothing and counts nothing twice. Bad messages go
    to the quarantine with their topic, partition and offset (`propensity events quarantine`). Ctrl-C stops.

    Example (propensity.yaml):

        sources:
          - name: web
            kafka: {topic: web-events, group: propensity}     # servers from $KAFKA_BOOTSTRAP_SERVERS

        KAFKA_BOOTSTRAP_SERVERS=broker:9092 propensity stream -w demo
    """
    from propensity.serving.streaming import run_streams, stream_sources

    ws = open_workspace(workspace, require_spec=True)
    sources = stream_sources(ws, source)
    online = None
    target = store or ws.spec.serving.online_store
    if target != "memory":
        from propensity.serving.action_rules import ActionRules
        from propensity.serving.startup import build_store, production_model, served_actions

        # The servers' feature set (project features plus the served actions' rule inputs): the same namespace.
        rules = ActionRules(served_actions(ws, [production_model(ws)]))
        online = build_store(ws, target, rules.features)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    shown = [0.0]

    def progress(stats: list[Any]) -> None:
        if json_out or time.monotonic() - shown[0] < 5:
            return
        shown[0] = time.monotonic()
        for s in stats:
            console.print(
                f"{s.source}: {fmt_int(s.consumed)} consumed ({s.events_per_second():,.0f}/s), "
                f"{fmt_int(s.accepted)} new, {fmt_int(s.duplicates)} duplicates, {fmt_int(s.quarantined)} "
                f"quarantined, lag {'?' if s.lag is None else fmt_int(s.lag)}"
            )

    if not json_out:
        console.print(f"consuming {', '.join(s.name for s in sources)} (Ctrl-C stops)")
    run = run_streams(ws, sources, store=online, until_idle=until_idle, max_seconds=max_seconds, stop=stop,
                      progress=progress)  # fmt: skip
    if json_out:
        print(json.dumps(run.to_json()))
        return
    for s in run.stats:
        console.print(
            f"[green]{s.source}[/]: {fmt_int(s.consumed)} messages, {fmt_int(s.accepted)} new events, "
            f"{fmt_int(s.duplicates)} duplicates, {fmt_int(s.quarantined)} quarantined in {run.seconds:.1f}s"
        )
