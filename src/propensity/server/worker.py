"""One worker process of ``propensity serve --workers N``: uvicorn's supervisor starts N of these (each imports
:func:`create_worker_app`), which share the port, the Redis online store and the metrics directory.

The supervisor passes its options in ``PROPENSITY_SERVE_CONFIG`` (JSON). Each worker loads the model and
catches the shared store up (the first one loads an empty namespace; the others wait for it and find the work
done), answers requests on its own core, and follows the registry: a promotion or rollback made through any
worker (or the CLI) reaches every worker within :data:`FOLLOW_EVERY_S` seconds. The monitors run once, in the
supervisor; workers export the latest stored run on ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from propensity.server.app import create_app
from propensity.server.state import ServerState
from propensity.serving.auth import KeyRing
from propensity.serving.service import ScoringService
from propensity.workspace import Workspace

log = logging.getLogger("propensity.server")

CONFIG_ENV = "PROPENSITY_SERVE_CONFIG"
FOLLOW_EVERY_S = 2.0


@dataclass(frozen=True)
class WorkerConfig:
    workspace: str
    model: str | None = None
    store: str | None = None
    ttl_minutes: float | None = None
    max_body_bytes: int = 16 * 1024 * 1024
    api_keys: str | None = None
    monitor: bool = True
    console: bool = True
    log_format: str = "text"
    log_level: str = "warning"
    access_log: bool = False

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> WorkerConfig:
        return cls(**json.loads(os.environ[CONFIG_ENV]))


async def _follow_registry(ws: Workspace, service: ScoringService) -> None:
    """Swap in the registry's production bundle whenever it changes (another worker or the CLI moved it)."""
    from propensity.registry.registry import Registry
    from propensity.serving.startup import production_model

    while True:
        await asyncio.sleep(FOLLOW_EVERY_S)
        try:
            production = await asyncio.to_thread(Registry(ws).production)
            current = service.model
            if production is not None and (current is None or current.version != production):
                model = await asyncio.to_thread(production_model, ws)
                if model is not None:
                    service.swap(model)
                    log.info("worker %d now serves %s", os.getpid(), model.version)
        except Exception:  # a half-written registry, a bundle being copied: try again at the next tick
            log.warning("could not follow the registry; retrying", exc_info=True)


def create_worker_app() -> Any:
    """The app of one worker, from the supervisor's options (uvicorn calls this in each worker process)."""
    from propensity.core.logs import configure_logging
    from propensity.server.access_log import AccessLogMiddleware
    from propensity.serving.live import LivePath
    from propensity.serving.startup import start_serving

    config = WorkerConfig.from_env()
    configure_logging(config.log_format, config.log_level)
    if config.access_log:
        logging.getLogger("propensity.access").setLevel(logging.INFO)
    ws = Workspace.open(Path(config.workspace))
    keys = KeyRing.configured(
        Path(config.api_keys) if config.api_keys else None, os.environ.get("PROPENSITY_API_KEYS")
    )
    serving = start_serving(
        ws,
        model_ref=config.model,
        ttl=None if config.ttl_minutes is None else timedelta(minutes=config.ttl_minutes),
        online_store=config.store,
    )
    service = serving.service
    # Each worker spools its own live events; its sync moves every spool into the log (whichever worker gets
    # the workspace first) and applies to the shared store what the others' syncs have not.
    live = LivePath(ws, service.store, watermark_us=serving.startup.watermark_us, index=serving.index)
    realtime = None
    if any(d.realtime for d in ws.spec.destinations):
        from propensity.activation.realtime import RealtimeActivator

        realtime = RealtimeActivator(ws)
    state = ServerState(service=service, workspace=ws, keys=keys, max_body_bytes=config.max_body_bytes,
                        realtime=realtime, stored_monitor_gauges=config.monitor, live=live)  # fmt: skip

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        follower = None if config.model else asyncio.create_task(_follow_registry(ws, service))
        try:
            yield
        finally:
            if follower is not None:
                follower.cancel()
            if realtime is not None:
                realtime.close()

    extra = []
    if config.console:
        from propensity.server.console import ENDPOINTS as CONSOLE

        extra = CONSOLE
    app = create_app(state, extra, lifespan=lifespan)
    return AccessLogMiddleware(app) if config.access_log else app
