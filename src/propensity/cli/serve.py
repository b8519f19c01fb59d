"""`propensity serve`: the real-time scoring API over HTTP."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import typer

from propensity.cli._common import WorkspaceOption, console, fmt_int, open_workspace, warn_stale
from propensity.workspace import Workspace

app = typer.Typer()


@app.command()
def serve(
    workspace: Path = WorkspaceOption,
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port."),
    model: str | None = typer.Option(
        None, "--model", help="Serve this bundle (id or prefix) instead of the registry's production bundle."
    ),
    store: str | None = typer.Option(
        None,
        "--store",
        help="Online store: 'memory' (this process, rebuilt from the event log) or a Redis URL shared by several "
        "server processes (redis://127.0.0.1:6379/0). Overrides serving.online_store in propensity.yaml.",
    ),
    ttl_minutes: float | None = typer.Option(
        None, min=0.0, help="How long a score stays valid (expiration_at); default: serving.score_ttl (15m)."
    ),
    max_body_mb: float = typer.Option(16.0, min=0.001, help="Largest request body accepted (413 beyond)."),
    log_level: str = typer.Option("warning", help="Log level of the server and uvicorn."),
    log_format: str | None = typer.Option(
        None,
        "--log-format",
        help="text or json (one object per line); default: the global --log-format (text).",
    ),
    access_log: bool = typer.Option(
        False,
        "--access-log/--no-access-log",
        help="Log every request (method, path without the query string, status, duration) with a request id, "
        "also returned in the X-Request-ID header (a caller's own X-Request-ID is kept).",
    ),
    monitor: bool = typer.Option(
        True,
        "--monitor/--no-monitor",
        help="Run the monitors every monitoring.interval (first run one interval after start) and export "
        "their latest results on /metrics.",
    ),
    snapshot_minutes: float = typer.Option(
        5.0,
        min=0.0,
        help="Snapshot the in-memory online store this often (and at shutdown), so a restart replays only the "
        "event log after it; 0: only at shutdown.",
    ),
    snapshots: bool = typer.Option(
        True, "--snapshots/--no-snapshots", help="Start from the newest snapshot (else replay the whole log)."
    ),
    streams: bool = typer.Option(
        False,
        "--streams/--no-streams",
        help="Also consume the project's stream sources (kafka:, redis_stream:) in this process, applying each "
        "batch to the online store once it is durable (as `propensity stream` does).",
    ),
    api_keys: Path | None = typer.Option(
        None,
        "--api-keys",
        help="JSON file of API keys with scopes (predict, ingest, admin); else $PROPENSITY_API_KEYS "
        "(name:scope+scope:key,...). With neither, authentication is off.",
    ),
    console_pages: bool = typer.Option(
        True,
        "--console/--no-console",
        help="Serve the web console at /console (sign in with a key that has the console or admin scope).",
    ),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        max=64,
        help="Worker processes sharing the port, one per core you give the server. More than one needs the "
        "Redis online store (--store redis://...), which they share; model moves reach every worker within "
        "2 s, and the monitors run once, in the supervisor.",
    ),
) -> None:
    """Serve real-time scores: GET/POST /v1/predict, POST /v1/events, models (list, promote, rollback), /healthz,
    /readyz, /metrics, /docs, and the web console at /console.

    At start the online features are loaded from the event log and the production model is compiled for
    single-row scoring. With the in-memory store each process holds its own state: run one server per workspace.
    With a Redis store, run as many as you like: an event posted to one is seen by the next prediction on any.

    Example:

        propensity serve -w demo --port 8000
        curl 'http://127.0.0.1:8000/v1/predict?customer_id=c42'

        propensity serve -w demo --port 8001 --store redis://127.0.0.1:6379/0
        propensity serve -w demo --port 8002 --store redis://127.0.0.1:6379/0
    """
    from propensity.core.logs import current_format

    fmt = log_format or current_format() or "text"
    ws = open_workspace(workspace, require_spec=True)
    if workers > 1:
        _configure_logs(fmt, log_level, access_log)
        _serve_workers(ws, workers, host=host, port=port, model=model, store=store, ttl_minutes=ttl_minutes,
                       max_body_mb=max_body_mb, log_level=log_level, monitor=monitor, api_keys=api_keys,
                       console_pages=console_pages, log_format=fmt, access_log=access_log)  # fmt: skip
        return
    run_server(
        ws, host=host, port=port, model=model, store=store, ttl_minutes=ttl_minutes, max_body_mb=max_body_mb,
        log_level=log_level, log_format=fmt, access_log=access_log, monitor=monitor, api_keys=api_keys,
        snapshot_minutes=snapshot_minutes, snapshots=snapshots, streams=streams, console_pages=console_pages,
    )  # fmt: skip


def _configure_logs(fmt: str, log_level: str, access_log: bool) -> None:
    from propensity.core.logs import configure_logging

    try:
        configure_logging(fmt, log_level)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if access_log:
        logging.getLogger("propensity.access").setLevel(logging.INFO)


class _Startup:
    """A status line that keeps moving while the server starts: what it loads, how much, the seconds so far."""

    def __init__(self, ws: Any) -> None:
        self.started = time.monotonic()
        self.events = _event_count(ws)
        self.status = console.status(self.text())
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="startup-status", daemon=True)

    def text(self) -> str:
        return (
            f"loading the online store (the newest snapshot, else the event log's {fmt_int(self.events)} events) "
            f"and compiling the model ({time.monotonic() - self.started:.0f}s)"
        )

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            self.status.update(self.text())

    def __enter__(self) -> _Startup:
        if not console.is_terminal:  # logs (a container, a pipe) get the line once; a terminal sees it move
            console.print(self.text().replace(" (0s)", ""), highlight=False)
        self.status.__enter__()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.status.__exit__(None, None, None)


def _event_count(ws: Any) -> int:
    from propensity.events.log import open_event_log

    if not ws.db_path.exists():
        return 0
    with ws.write_lock(), open_event_log(ws).connection(read_only=True) as con:
        row = con.execute("SELECT count(*) FROM events").fetchall()[0]
    return int(row[0])


def run_server(
    ws: Workspace,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    model: str | None = None,
    store: str | None = None,
    ttl_minutes: float | None = None,
    max_body_mb: float = 16.0,
    log_level: str = "warning",
    log_format: str = "text",
    access_log: bool = False,
    monitor: bool = True,
    api_keys: Path | None = None,
    snapshot_minutes: float = 5.0,
    snapshots: bool = True,
    streams: bool = False,
    console_pages: bool = True,
    ready_url: str | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Start one server process and serve until Ctrl-C, which it acknowledges at once; it then finishes what
    must not be lost (the final spool sync and the store's snapshot) and exits, saying how long that took.

    ``on_ready`` is called once ``ready_url`` (default: /healthz) has answered 200 over HTTP, so whatever it
    prints (quickstart's curl) works when it is printed.
    """
    import uvicorn

    from propensity.events.clock import DataClock
    from propensity.server import ServerState, create_app
    from propensity.server.access_log import AccessLogMiddleware
    from propensity.serving.auth import KeyRing
    from propensity.serving.live import LivePath
    from propensity.serving.snapshot import snapshot_dir, write_snapshot_async
    from propensity.serving.startup import start_serving
    from propensity.serving.store import InMemoryStore

    _configure_logs(log_format, log_level, access_log)
    keys = KeyRing.configured(api_keys, os.environ.get("PROPENSITY_API_KEYS"))
    with _Startup(ws):
        serving = start_serving(
            ws,
            model_ref=model,
            ttl=None if ttl_minutes is None else timedelta(minutes=ttl_minutes),
            online_store=store,
            snapshots=snapshots,
        )
    service, timings, started = serving.service, serving.timings, serving.startup
    snapshotter = None
    if isinstance(service.store, InMemoryStore):
        engine, folder, index = service.store.engine, snapshot_dir(ws.state_dir), serving.index

        def snapshotter(watermark: int) -> object:
            return write_snapshot_async(engine, folder, watermark, index)

    live = LivePath(
        ws,
        service.store,
        watermark_us=started.watermark_us,
        index=serving.index,
        snapshot_interval=snapshot_minutes * 60 if snapshot_minutes > 0 else float("inf"),
        snapshotter=snapshotter,
    )
    if streams:
        from propensity.serving.streaming import stream_sources

        live.add_streams(stream_sources(ws))
        console.print(f"streams: consuming {', '.join(c.event_source.name for c in live.streams)}")
    store_customers = getattr(service.store, "customers", 0)
    where = getattr(service.store, "url", "in memory")
    console.print(
        f"online store ({where}): [bold]{fmt_int(store_customers)}[/] customers, {started.describe()}"
    )
    if service.model is None:
        console.print(
            "[yellow]no model in production[/]: /v1/predict answers with the rule-based fallback (flagged) "
            "until one is promoted (`propensity models promote`); /v1/events works"
        )
    else:
        m = service.model
        console.print(
            f"model [bold]{m.version}[/] ({', '.join(m.action_names)}), scorer: {m.scorer.backend}, "
            f"loaded in {timings['model_load']:.1f}s"
        )
    clock = DataClock.read(ws)
    if ws.spec.clock == "data" and clock.newest_event is not None:
        console.print(
            f"clock: data — answers are as of the event log's end ({clock.newest_event:%Y-%m-%d %H:%M} UTC) "
            "and the clock runs on from there"
        )
    else:
        warn_stale(clock.warning())
    if keys.enabled:
        console.print(f"API keys: {', '.join(k.name for k in keys.keys)}")
    else:
        console.print(
            "[yellow]authentication is off[/] (no --api-keys or PROPENSITY_API_KEYS): local use only"
        )
    realtime = None
    if any(d.realtime for d in ws.spec.destinations):
        from propensity.activation.realtime import RealtimeActivator

        realtime = RealtimeActivator(ws)
        names = ", ".join(d.name for d in realtime.destinations)
        console.print(f"real-time activation: changed decisions go to {names} as events arrive")
    monitors = None
    if monitor:
        from propensity.monitoring.gauges import MonitorScheduler

        monitors = MonitorScheduler(ws)
        monitors.start(run_now=False)
        console.print(f"monitors: every {ws.spec.monitoring.interval}, results on /metrics")
    state = ServerState(
        service=service,
        workspace=ws,
        keys=keys,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        realtime=realtime,
        monitors=monitors,
        live=live,
    )
    extra = []
    if console_pages:
        from propensity.server.console import ENDPOINTS as CONSOLE
        from propensity.server.console.app import warm

        extra = CONSOLE
        warm()
    docs = f"API docs: http://{host}:{port}/docs" + (
        f", console: http://{host}:{port}/console" if console_pages else ""
    )
    asgi: Any = create_app(state, extra)
    if access_log:
        asgi = AccessLogMiddleware(asgi)
    # JSON: uvicorn's own records go through the same handler (no logging config of uvicorn's own).
    config = uvicorn.Config(
        asgi, host=host, port=port, log_level=log_level, access_log=False, timeout_graceful_shutdown=1,
        log_config=None if log_format == "json" else uvicorn.config.LOGGING_CONFIG,
    )  # fmt: skip

    class _Server(uvicorn.Server):
        """uvicorn's server, acknowledging Ctrl-C at once."""

        interrupted: float | None = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            if not self.should_exit:
                self.interrupted = time.monotonic()
                console.print(
                    "\n[yellow]Ctrl-C: stopping the server[/] (open requests get 1 s; then the last live events "
                    "are moved into the log and the online store is snapshotted, so the next start is quick)"
                )
            super().handle_exit(sig, frame)

    server = _Server(config)
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    watcher = threading.Thread(
        target=_when_ready, args=(server, ready_url or f"{base}/healthz", on_ready, host, port, docs),
        name="ready-watch", daemon=True,
    )  # fmt: skip
    watcher.start()
    try:
        server.run()
    finally:
        # Bounded waits: a monitor run in progress is abandoned (its transaction rolls back), queued webhook
        # deliveries stay in the durable outbox for the next start.
        if monitors is not None:
            monitors.stop(timeout_s=0.5)
        if realtime is not None:
            realtime.close(timeout=0.5)
        if server.interrupted is not None:
            console.print(
                f"[yellow]server stopped[/] {time.monotonic() - server.interrupted:.1f}s after Ctrl-C"
            )
            # Nothing is left to finish: requests are answered, live events in the log, the store snapshotted,
            # deliveries in their outbox. Freeing a large online store object by object (and the interpreter's
            # own teardown) took 10 s and more on a loaded machine, so the process ends here, as a Ctrl-C'd
            # program does (exit code 130).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)


def _when_ready(
    server: Any, url: str, on_ready: Callable[[], None] | None, host: str, port: int, docs: str
) -> None:
    """Poll ``url`` until it answers 200, then say where the server is and call ``on_ready``.

    The server's own signal, not a guess: first uvicorn's ``started`` (it is listening), then ``url`` itself. A
    request gets a minute to answer: on a loaded machine the first answer can take seconds, and a short timeout
    would give up on every try while the server works through them.
    """
    import urllib.error
    import urllib.request

    while not server.started and not server.should_exit:
        time.sleep(0.05)
    while not server.should_exit:
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                if r.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    else:
        return
    console.print(f"[green]serving[/] on http://{host}:{port}  ({docs})")
    if on_ready is not None:
        on_ready()


def _serve_workers(
    ws: Workspace,
    workers: int,
    *,
    host: str,
    port: int,
    model: str | None,
    store: str | None,
    ttl_minutes: float | None,
    max_body_mb: float,
    log_level: str,
    monitor: bool,
    api_keys: Path | None,
    console_pages: bool = True,
    log_format: str = "text",
    access_log: bool = False,
) -> None:
    """uvicorn's supervisor over ``workers`` processes (see :mod:`propensity.server.worker`)."""
    import os
    import shutil
    import tempfile

    import uvicorn

    from propensity.server.worker import CONFIG_ENV, WorkerConfig

    target = store or ws.spec.serving.online_store
    if target == "memory":
        console.print(
            "[red]--workers needs a shared online store[/]: each process would hold its own in-memory state "
            "and events posted to one would not reach the others. Add --store redis://127.0.0.1:6379/0 (or set "
            "serving.online_store), or run one worker."
        )
        raise typer.Exit(2)
    metrics_dir = tempfile.mkdtemp(prefix="propensity-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # before any worker imports prometheus_client
    os.environ[CONFIG_ENV] = WorkerConfig(
        workspace=str(ws.root.resolve()), model=model, store=store, ttl_minutes=ttl_minutes,
        max_body_bytes=int(max_body_mb * 1024 * 1024), api_keys=str(api_keys.resolve()) if api_keys else None,
        monitor=monitor, console=console_pages, log_format=log_format, log_level=log_level,
        access_log=access_log,
    ).to_env()  # fmt: skip
    monitors = None
    if monitor:
        from propensity.monitoring.gauges import MonitorScheduler

        monitors = MonitorScheduler(ws)
        monitors.start(run_now=False)
        console.print(
            f"monitors: every {ws.spec.monitoring.interval} (in this supervisor), results on /metrics"
        )
    from propensity.serving.redis_store import redacted

    console.print(f"[green]serving[/] on http://{host}:{port} with {workers} workers on {redacted(target)} "
                  f"(API docs: http://{host}:{port}/docs)")  # fmt: skip
    try:
        uvicorn.run("propensity.server.worker:create_worker_app", factory=True, workers=workers, host=host,
                    port=port, log_level=log_level, access_log=False,
                    log_config=None if log_format == "json" else uvicorn.config.LOGGING_CONFIG)  # fmt: skip
    finally:
        if monitors is not None:
            monitors.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)
