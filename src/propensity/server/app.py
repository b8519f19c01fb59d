"""The ASGI app: plain Starlette (about half FastAPI's cost per request here; see docs/serving.md) over the
route table, with errors answered by exception handlers, metrics by a middleware, and the handlers' shared
state on ``app.state.server``.

Handlers are ``async`` and run on the event loop; blocking work (the durable event append, registry moves, the
Redis store's writes) runs in worker threads, and the Redis store's reads are asynchronous, so a slow or hung
backend never holds the loop (``/healthz`` keeps answering at once). Customer ids are never logged.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.types import Lifespan

from propensity.server import api, ops
from propensity.server.endpoints import Endpoint, routes
from propensity.server.errors import exception_handlers
from propensity.server.metrics import MetricsMiddleware
from propensity.server.openapi import openapi_document
from propensity.server.state import ServerState

# The hot path first: the router tries routes in order.
ENDPOINTS: list[Endpoint] = [*api.ENDPOINTS, *ops.ENDPOINTS]


def create_app(
    state: ServerState, extra: Sequence[Endpoint] = (), *, lifespan: Lifespan[Starlette] | None = None
) -> Starlette:
    """The app over ``state`` (see :func:`propensity.serving.startup.build_service`); ``extra`` endpoints (a
    console, say) are served and documented alongside the API's; ``lifespan`` runs around the app's life."""
    endpoints = [*ENDPOINTS, *extra]

    given = lifespan

    @contextlib.asynccontextmanager
    async def live_lifespan(app: Starlette) -> AsyncIterator[None]:
        # The live path's background sync (spools into the log, others' events into the store, snapshots),
        # around the caller's own lifespan.
        if state.live is not None:
            state.live.start()
        try:
            if given is None:
                yield
            else:
                async with given(app):
                    yield
        finally:
            if state.live is not None:
                await state.live.stop()

    app = Starlette(
        routes=routes(endpoints),
        middleware=[Middleware(MetricsMiddleware, metrics=state.metrics)],
        exception_handlers=exception_handlers(),
        lifespan=live_lifespan,
    )
    app.state.server = state
    app.state.endpoints = endpoints
    app.state.openapi = orjson.dumps(openapi_document(endpoints))
    return app
