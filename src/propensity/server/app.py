"""The HTTP API: routes only. Scoring, ingest and the store live in :mod:`propensity.serving`.

Plain Starlette with pre-serialised orjson responses (measured: about half FastAPI's cost per request here; see
docs/serving.md); the OpenAPI document is written out in :mod:`propensity.server.openapi` and served at
``/openapi.json`` with Swagger UI at ``/docs``. Handlers are ``async`` and run on the event loop (the online store
is single-threaded); only the durable event append runs in a worker thread.

Errors are JSON ``{"error": {"code", "message", "field"?, "errors"?}}`` with 4xx statuses naming the field; no
input produces a 5xx. Customer ids are never logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from propensity.server.openapi import SWAGGER_HTML, openapi_document
from propensity.serving.auth import ForbiddenError, KeyRing, UnauthorizedError
from propensity.serving.ingest import MAX_BATCH, RejectedBatch, append_live
from propensity.serving.models import (
    ModelMoveError,
    load_canary,
    promote_and_load,
    registry_entries,
    rollback_and_load,
)
from propensity.serving.service import MAX_CUSTOMERS, NoModelError, ScoringService, UnknownActionError
from propensity.serving.store import StoreUnavailableError
from propensity.workspace import Workspace

if TYPE_CHECKING:
    from propensity.activation.realtime import RealtimeActivator
    from propensity.monitoring.gauges import MonitorScheduler

log = logging.getLogger("propensity.server")

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_ID_LENGTH = 256
_JSON = "application/json"
_TRUE = frozenset(("true", "1", "yes"))
_FALSE = frozenset(("false", "0", "no", ""))
_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class HTTPError(Exception):
    def __init__(self, status: int, code: str, message: str, *, field: str | None = None, errors: Any = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.errors = status, code, message, field, errors

    def response(self) -> Response:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.errors is not None:
            body["errors"] = self.errors
        return Response(orjson.dumps({"error": body}), status_code=self.status, media_type=_JSON)


@dataclass
class Metrics:
    """Prometheus counters and latency histograms per route, kept in plain dicts (one event loop)."""

    requests: dict[tuple[str, int], int] = field(default_factory=dict)
    latency: dict[str, list[float]] = field(default_factory=dict)  # per route: bucket counts + [sum, count]
    events_accepted: int = 0
    events_duplicate: int = 0
    batches_rejected: int = 0
    # Feature freshness as this server sees it: when live events last changed the online features (epoch
    # seconds), and how late the newest of them arrived (accepted at − its event_time).
    last_event_applied_at: float | None = None
    last_event_lag_seconds: float | None = None

    def events_applied(self, events: pa.Table) -> None:
        if events.num_rows == 0:
            return
        newest = pc.max(events.column("event_time").cast(pa.timestamp("us", tz="UTC"))).as_py()
        accepted = pc.max(events.column("available_at").cast(pa.timestamp("us", tz="UTC"))).as_py()
        self.last_event_applied_at = time.time()
        self.last_event_lag_seconds = max(0.0, (accepted - newest).total_seconds())

    def observe(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        h = self.latency.get(route)
        if h is None:
            h = self.latency[route] = [0.0] * (len(_BUCKETS) + 2)
        for i, b in enumerate(_BUCKETS):
            if seconds <= b:
                h[i] += 1
        h[-2] += seconds
        h[-1] += 1

    def render(self, service: ScoringService) -> str:
        lines = [
            "# HELP propensity_http_requests_total HTTP requests by route and status.",
            "# TYPE propensity_http_requests_total counter",
        ]
        for (route, status), n in sorted(self.requests.items()):
            lines.append(f'propensity_http_requests_total{{route="{route}",status="{status}"}} {n}')
        lines += [
            "# HELP propensity_http_request_duration_seconds Time in the handler.",
            "# TYPE propensity_http_request_duration_seconds histogram",
        ]
        for route, h in sorted(self.latency.items()):
            for b, cum in zip(_BUCKETS, h, strict=False):
                lines.append(
                    f'propensity_http_request_duration_seconds_bucket{{route="{route}",le="{b}"}} {int(cum)}'
                )
            lines.append(
                f'propensity_http_request_duration_seconds_bucket{{route="{route}",le="+Inf"}} {int(h[-1])}'
            )
            lines.append(f'propensity_http_request_duration_seconds_sum{{route="{route}"}} {h[-2]:.6f}')
            lines.append(f'propensity_http_request_duration_seconds_count{{route="{route}"}} {int(h[-1])}')
        lines += [
            "# TYPE propensity_events_accepted_total counter",
            f"propensity_events_accepted_total {self.events_accepted}",
            "# TYPE propensity_events_duplicate_total counter",
            f"propensity_events_duplicate_total {self.events_duplicate}",
            "# TYPE propensity_event_batches_rejected_total counter",
            f"propensity_event_batches_rejected_total {self.batches_rejected}",
        ]
        model = service.model
        if model is not None:
            lines += [
                "# TYPE propensity_model_info gauge",
                f'propensity_model_info{{model_version="{model.version}",'
                f'feature_set_version="{model.feature_set_version}",backend="{model.scorer.backend}"}} 1',
            ]
        customers = getattr(service.store, "customers", None)
        if isinstance(customers, int):
            lines += ["# TYPE propensity_online_customers gauge", f"propensity_online_customers {customers}"]
        if self.last_event_applied_at is not None:
            lines += [
                "# HELP propensity_online_features_age_seconds Seconds since live events last updated the "
                "online features.",
                "# TYPE propensity_online_features_age_seconds gauge",
                f"propensity_online_features_age_seconds {time.time() - self.last_event_applied_at:.3f}",
                "# HELP propensity_live_event_lag_seconds How late the newest live event arrived (accepted at "
                "minus its event_time).",
                "# TYPE propensity_live_event_lag_seconds gauge",
                f"propensity_live_event_lag_seconds {self.last_event_lag_seconds:.3f}",
            ]
        return "\n".join(lines) + "\n"


@dataclass
class ServerState:
    """What the routes use: the scoring service, the workspace (for live ingest; None disables it), limits."""

    service: ScoringService
    workspace: Workspace | None = None
    keys: KeyRing = field(default_factory=KeyRing)
    max_body_bytes: int = MAX_BODY_BYTES
    ready: bool = True
    metrics: Metrics = field(default_factory=Metrics)
    # Real-time activation: destinations flagged `realtime: true` get changed decisions as events arrive.
    realtime: RealtimeActivator | None = None
    # Monitors run on a schedule in this process; their latest results are exported on /metrics.
    monitors: MonitorScheduler | None = None


def _activate_safely(activator: RealtimeActivator, ids: list[str], predictions: dict[str, Any]) -> None:
    try:
        activator.on_customers_changed(ids, predictions)
    except Exception:  # a destination's failure must not take the server down; the outbox retries webhooks
        log.exception("real-time activation failed for %d customers", len(ids))


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=_JSON)


async def _read_json(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_big = int(declared) > limit
        except ValueError:
            raise HTTPError(
                400, "bad_request", "Content-Length is not a number", field="Content-Length"
            ) from None
        if too_big:
            raise HTTPError(413, "body_too_large", f"the body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, "body_too_large", f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise HTTPError(400, "invalid_json", f"the body is not valid JSON: {exc}", field="body") from None


def _customer_id(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise HTTPError(422, "invalid_parameter", f"{name} must be a non-empty string", field=name)
    if len(value) > MAX_ID_LENGTH:
        raise HTTPError(
            422, "invalid_parameter", f"{name} is longer than {MAX_ID_LENGTH} characters", field=name
        )
    return value


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    return request.headers.get("x-api-key")


async def _has_body(request: Request) -> bool:
    return request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers


def _need_workspace(state: ServerState) -> Workspace:
    if state.workspace is None:
        raise HTTPError(503, "no_workspace", "this server was started without a workspace")
    return state.workspace


def create_app(state: ServerState) -> Starlette:
    """The ASGI app over ``state`` (see :func:`propensity.serving.startup.build_service`)."""
    service = state.service
    metrics = state.metrics
    openapi_bytes = orjson.dumps(openapi_document())

    keys = state.keys

    def route(
        path: str, methods: list[str], name: str, scope: str | None = None
    ) -> Callable[[Callable[[Request], Awaitable[Response]]], Route]:
        def wrap(handler: Callable[[Request], Awaitable[Response]]) -> Route:
            async def endpoint(request: Request) -> Response:
                started = time.perf_counter()
                try:
                    if scope is not None and keys.enabled:
                        keys.check(_presented_key(request), scope)
                    response = await handler(request)
                except HTTPError as exc:
                    response = exc.response()
                except UnauthorizedError as exc:
                    response = HTTPError(401, "unauthorized", str(exc)).response()
                    response.headers["WWW-Authenticate"] = "Bearer"
                except ForbiddenError as exc:
                    response = HTTPError(403, "forbidden", str(exc)).response()
                except NoModelError as exc:
                    response = HTTPError(503, "no_model", str(exc)).response()
                except StoreUnavailableError as exc:  # the online store's Redis is away: retry later
                    response = HTTPError(503, "store_unavailable", str(exc)).response()
                except Exception:  # never a bare 500 page, never the customer id in a log
                    log.exception("unexpected error in %s", name)
                    response = HTTPError(500, "internal_error", "unexpected server error").response()
                metrics.observe(name, response.status_code, time.perf_counter() - started)
                return response

            return Route(path, endpoint, methods=methods, name=name)

        return wrap

    @route("/healthz", ["GET"], "healthz")
    async def healthz(request: Request) -> Response:
        return _json({"status": "ok"})

    @route("/readyz", ["GET"], "readyz")
    async def readyz(request: Request) -> Response:
        model = service.model
        if not state.ready or model is None:
            raise HTTPError(503, "not_ready", "no model loaded yet" if model is None else "starting")
        return _json({"status": "ready", "model_version": model.version, "scorer": model.scorer.backend})

    @route("/metrics", ["GET"], "metrics")
    async def metrics_route(request: Request) -> Response:
        text = metrics.render(service)
        if state.monitors is not None:
            text += state.monitors.gauges()
        return Response(text, media_type="text/plain; version=0.0.4")

    @route("/v1/predict", ["GET"], "predict", "predict")
    async def predict_get(request: Request) -> Response:
        params = request.query_params
        customer_id = _customer_id(params.get("customer_id"), "customer_id")
        actions_raw = params.get("actions")
        actions = [a.strip() for a in actions_raw.split(",") if a.strip()] if actions_raw else None
        explain_raw = params.get("explain", "false").lower()
        if explain_raw not in _TRUE and explain_raw not in _FALSE:
            raise HTTPError(422, "invalid_parameter", "explain must be true or false", field="explain")
        try:
            body = service.predict(customer_id, actions, explain=explain_raw in _TRUE)
        except UnknownActionError as exc:
            raise HTTPError(422, "unknown_action", str(exc), field="actions") from None
        return _json(body)

    @route("/v1/predict", ["POST"], "predict_batch", "predict")
    async def predict_post(request: Request) -> Response:
        data = await _read_json(request, state.max_body_bytes)
        if not isinstance(data, dict):
            raise HTTPError(
                422, "invalid_body", "the body must be a JSON object with customer_ids", field="body"
            )
        ids = data.get("customer_ids")
        if not isinstance(ids, list) or not ids:
            raise HTTPError(
                422, "invalid_field", "customer_ids must be a non-empty list", field="customer_ids"
            )
        if len(ids) > MAX_CUSTOMERS:
            raise HTTPError(
                422,
                "invalid_field",
                f"customer_ids: at most {MAX_CUSTOMERS} per request",
                field="customer_ids",
            )
        customer_ids = [_customer_id(c, f"customer_ids[{i}]") for i, c in enumerate(ids)]
        actions = data.get("actions")
        if actions is not None and (
            not isinstance(actions, list) or not all(isinstance(a, str) for a in actions)
        ):
            raise HTTPError(422, "invalid_field", "actions must be a list of action names", field="actions")
        try:
            body = service.predict_many(customer_ids, actions)
        except UnknownActionError as exc:
            raise HTTPError(422, "unknown_action", str(exc), field="actions") from None
        return _json(body)

    @route("/v1/events", ["POST"], "events", "ingest")
    async def events(request: Request) -> Response:
        if state.workspace is None:
            raise HTTPError(503, "ingest_disabled", "this server was started without a workspace to write to")
        data = await _read_json(request, state.max_body_bytes)
        if isinstance(data, dict) and "events" in data:
            batch = data["events"]
            if not isinstance(batch, list):
                raise HTTPError(
                    422, "invalid_field", "events must be a list of event objects", field="events"
                )
        elif isinstance(data, list):
            batch = data
        elif isinstance(data, dict):
            batch = [data]
        else:
            raise HTTPError(
                422, "invalid_body", 'send an event object, a list, or {"events": [...]}', field="body"
            )
        if len(batch) > MAX_BATCH:
            raise HTTPError(
                422, "batch_too_large", f"a batch holds at most {MAX_BATCH} events", field="events"
            )
        try:
            result = await run_in_threadpool(append_live, state.workspace, batch)
        except RejectedBatch as exc:
            metrics.batches_rejected += 1
            first = exc.errors[0]
            raise HTTPError(
                422, "invalid_events", str(exc), field=first.field, errors=[e.to_json() for e in exc.errors]
            ) from None
        # Durable now; apply to the online store before answering, so the next prediction reflects it.
        service.store.apply(result.inserted)
        metrics.events_accepted += result.accepted
        metrics.events_duplicate += result.duplicates
        metrics.events_applied(result.inserted)
        response = _json(
            {"received": result.received, "accepted": result.accepted, "duplicates": result.duplicates}
        )
        if state.realtime is not None and state.realtime.destinations and result.accepted:
            # Rescore the customers the events touched now (the store belongs to this event loop), then hand
            # the decisions to the activator after the answer is sent (it sends only changed ones).
            ids = list(dict.fromkeys(str(c) for c in result.inserted.column("customer_id").to_pylist()))
            predictions = {c: service.predict(c) for c in ids}
            response.background = BackgroundTask(_activate_safely, state.realtime, ids, predictions)
        return response

    def _served() -> dict[str, Any] | None:
        model = service.model
        if model is None:
            return None
        canary = service.canary
        return {
            "model_version": model.version,
            "feature_set_version": model.feature_set_version,
            "actions": list(model.action_names),
            "scorer": model.scorer.backend,
            "canary": None
            if canary is None
            else {"model_version": canary.loaded.model.version, "share": canary.share},
        }

    @route("/v1/models", ["GET"], "models", "admin")
    async def models(request: Request) -> Response:
        bundles = await run_in_threadpool(registry_entries, state.workspace) if state.workspace else []
        return _json({"serving": _served(), "bundles": bundles})

    @route("/v1/models/{version}/promote", ["POST"], "promote", "admin")
    async def promote_route(request: Request) -> Response:
        ws = _need_workspace(state)
        body = await _read_json(request, state.max_body_bytes) if await _has_body(request) else {}
        if not isinstance(body, dict):
            raise HTTPError(422, "invalid_body", "the body must be a JSON object", field="body")
        force, reason = body.get("force", False), body.get("reason")
        if not isinstance(force, bool):
            raise HTTPError(422, "invalid_field", "force must be true or false", field="force")
        if reason is not None and not isinstance(reason, str):
            raise HTTPError(422, "invalid_field", "reason must be a string", field="reason")
        try:
            model, gate = await run_in_threadpool(
                promote_and_load, ws, request.path_params["version"], force=force, reason=reason
            )
        except ModelMoveError as exc:
            raise HTTPError(exc.status, exc.code, str(exc)) from None
        previous = service.swap(model)  # in-flight requests finish on the model they started with
        return _json(
            {"serving": _served(), "previous": None if previous is None else previous.version, "gate": gate}
        )

    @route("/v1/models/rollback", ["POST"], "rollback", "admin")
    async def rollback_route(request: Request) -> Response:
        ws = _need_workspace(state)
        try:
            model = await run_in_threadpool(rollback_and_load, ws)
        except ModelMoveError as exc:
            raise HTTPError(exc.status, exc.code, str(exc)) from None
        previous = service.swap(model)
        return _json({"serving": _served(), "previous": None if previous is None else previous.version})

    @route("/v1/models/canary", ["POST"], "canary", "admin")
    async def canary_route(request: Request) -> Response:
        ws = _need_workspace(state)
        body = await _read_json(request, state.max_body_bytes)
        if not isinstance(body, dict):
            raise HTTPError(
                422, "invalid_body", 'send {"share": 0.1, "model_version": "m-..."}', field="body"
            )
        share, ref = body.get("share"), body.get("model_version")
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 <= share <= 1.0:
            raise HTTPError(422, "invalid_field", "share must be a number from 0 to 1 (0 stops the canary)",
                            field="share")  # fmt: skip
        if ref is not None and not isinstance(ref, str):
            raise HTTPError(
                422, "invalid_field", "model_version must be a bundle id or prefix", field="model_version"
            )
        if share == 0:
            service.set_canary(None)
        else:
            try:
                model = await run_in_threadpool(load_canary, ws, ref)
            except ModelMoveError as exc:
                raise HTTPError(exc.status, exc.code, str(exc)) from None
            service.set_canary(model, float(share))
        return _json({"serving": _served()})

    @route("/openapi.json", ["GET"], "openapi")
    async def openapi(request: Request) -> Response:
        return Response(openapi_bytes, media_type=_JSON)

    @route("/docs", ["GET"], "docs")
    async def docs(request: Request) -> Response:
        return HTMLResponse(SWAGGER_HTML)

    routes = [healthz, readyz, metrics_route, predict_get, predict_post, events, models, rollback_route,
              canary_route, promote_route, openapi, docs]  # fmt: skip

    async def not_found(request: Request, exc: Exception) -> Response:
        return HTTPError(404, "not_found", "no such endpoint; see /docs").response()

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return HTTPError(405, "method_not_allowed", f"{request.method} is not allowed here").response()

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})
