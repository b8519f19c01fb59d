"""Operational endpoints: liveness, readiness, metrics, the OpenAPI document and its rendered page. None of them
touches the online store's backend (a hung Redis never slows them down)."""

from __future__ import annotations

import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from propensity.server.api import json_response
from propensity.server.endpoints import Endpoint
from propensity.server.errors import JSON, ApiError
from propensity.server.schemas import DocsAsset, Ready, Status
from propensity.server.state import ServerState

_HEALTHY = b'{"status":"ok"}'
STORED_GAUGES_TTL_S = 30.0

# Swagger UI is vendored under static/swagger-ui (see VENDORED.md there) and served from /docs/assets: the page
# works offline, and the online validator badge is off so that nothing is fetched from elsewhere.
SWAGGER_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>propensity API</title>
<link rel="icon" type="image/png" href="/docs/assets/favicon-32x32.png">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#ui", validatorUrl: null});</script>
</body></html>
"""
DOCS_ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
}
_asset_cache: dict[str, bytes] = {}


async def healthz(request: Request) -> Response:
    """Liveness: the process answers. Touches nothing else."""
    return Response(_HEALTHY, media_type=JSON)


async def readyz(request: Request) -> Response:
    state: ServerState = request.app.state.server
    model = state.service.model
    if not state.ready or model is None:
        raise ApiError(503, "not_ready", "no model loaded yet" if model is None else "starting")
    return json_response({"status": "ready", "model_version": model.version, "scorer": model.scorer.backend})


_stored: dict[int, tuple[float, str]] = {}


def _monitor_gauges(state: ServerState) -> str:
    if state.monitors is not None:
        return state.monitors.gauges()
    if not state.stored_monitor_gauges or state.workspace is None:
        return ""
    # Several workers: the supervisor runs the monitors; the latest stored run is read at most every 30 s.
    now = time.monotonic()
    cached = _stored.get(id(state))
    if cached is None or now - cached[0] > STORED_GAUGES_TTL_S:
        from propensity.monitoring.gauges import render_latest

        cached = _stored[id(state)] = (now, render_latest(state.workspace))
    return cached[1]


def _render(state: ServerState, accept: str | None) -> tuple[bytes, str]:
    customers = getattr(state.service.store, "customers", None)
    extra = _monitor_gauges(state) + (state.live.metrics() if state.live is not None else "")
    return state.metrics.render(
        accept, state.service, extra, customers if isinstance(customers, int) else None
    )


async def metrics(request: Request) -> Response:
    state: ServerState = request.app.state.server
    body, content_type = await run_in_threadpool(_render, state, request.headers.get("accept"))
    return Response(body, media_type=content_type)


async def openapi(request: Request) -> Response:
    return Response(request.app.state.openapi, media_type=JSON)


async def docs(request: Request) -> Response:
    return HTMLResponse(SWAGGER_HTML)


async def docs_asset(request: Request) -> Response:
    """One of the vendored Swagger UI files the /docs page loads (read once, then kept in memory)."""
    name = request.path_params["name"]
    media_type = DOCS_ASSETS.get(name)
    if media_type is None:
        raise ApiError(404, "not_found", f"no asset {name!r}; the /docs page uses: {', '.join(DOCS_ASSETS)}")
    body = _asset_cache.get(name)
    if body is None:
        from importlib import resources

        body = _asset_cache[name] = (
            resources.files("propensity.server").joinpath("static", "swagger-ui", name).read_bytes()
        )
    return Response(body, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})


ENDPOINTS = [
    Endpoint("/healthz", "GET", "healthz", healthz, "Liveness: the process answers", ok=Status),
    Endpoint("/readyz", "GET", "readyz", readyz, "Readiness: a model is loaded and the online store is built",
             ok=Ready, responses={503: ("Not ready.", None)}),
    Endpoint("/metrics", "GET", "metrics", metrics, "Prometheus metrics (OpenMetrics when asked for)",
             ok_content_type="text/plain", ok_description="Text exposition format, or OpenMetrics."),
    Endpoint("/openapi.json", "GET", "openapi", openapi, "This document", ok_description="OpenAPI 3.1."),
    Endpoint("/docs", "GET", "docs", docs, "The API, rendered (Swagger UI, served from here: works offline)",
             ok_content_type="text/html", ok_description="An HTML page."),
    Endpoint("/docs/assets/{name}", "GET", "docs_asset", docs_asset, "A file of the /docs page (vendored Swagger UI)",
             path_params=DocsAsset, ok_content_type="application/octet-stream",
             ok_description="The file, with its own content type.", responses={404: ("No such asset.", None)}),
]  # fmt: skip
