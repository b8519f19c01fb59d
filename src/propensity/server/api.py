"""The API's handlers (scores, events, models) and their route table. Handlers are module-level functions that
read ``app.state.server`` (:class:`~propensity.server.state.ServerState`) and raise on bad input; errors are
answered by the app's exception handlers (:mod:`propensity.server.errors`).

``GET /v1/predict`` is the hot path and a plain ASGI callable: its query is parsed from the raw query string,
validated by :class:`~propensity.server.schemas.PredictQuery`, and its answer is the service's bytes (one orjson
call) sent in two messages, with no Request or Response object on the way.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

import orjson
from pydantic import TypeAdapter, ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from propensity.events.live import RejectedBatch
from propensity.events.spool import SpoolError
from propensity.server.endpoints import Endpoint, presented_key
from propensity.server.errors import JSON, ApiError
from propensity.server.schemas import (
    MAX_EVENTS,
    AttributesAccepted,
    AttributesBody,
    BatchPrediction,
    Canary,
    Event,
    EventsAccepted,
    EventsBody,
    Models,
    ModelVersionPath,
    Moved,
    PredictBatch,
    Prediction,
    PredictQuery,
    Promote,
    event_name_problems,
)
from propensity.server.state import ServerState
from propensity.serving.models import load_canary, promote_and_load, registry_entries, rollback_and_load

if TYPE_CHECKING:
    from propensity.activation.realtime import RealtimeActivator

log = logging.getLogger("propensity.server")
_JSON_BYTES = JSON.encode()
_EVENTS = TypeAdapter(list[Event])


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type=JSON)


def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON: 413 over ``limit`` bytes (declared or read), 400 when it is not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_big = int(declared) > limit
        except ValueError:
            raise ApiError(
                400, "bad_request", "Content-Length is not a number", field="Content-Length"
            ) from None
        if too_big:
            raise ApiError(413, "body_too_large", f"the body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    try:
        return orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}", field="body") from None


def _has_body(request: Request) -> bool:
    return request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers


# ------------------------------------------------------------------------------------------- predictions


def _query(raw: bytes) -> dict[str, str]:
    """A query string's parameters (the last of repeated ones), decoded as Starlette does."""
    out: dict[str, str] = {}
    if raw:
        for part in raw.decode("latin-1").split("&"):
            if part:
                key, _, value = part.partition("=")
                if "%" in part or "+" in part:
                    key, value = unquote_plus(key), unquote_plus(value)
                out[key] = value
    return out


class _PredictOne:
    """``GET /v1/predict``: one customer's scores (an ASGI app: the lean path)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state: ServerState = scope["app"].state.server
        if state.keys.enabled:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            state.keys.check(presented_key(headers), "predict")
        query = PredictQuery.model_validate(_query(scope["query_string"]))
        actions = [a.strip() for a in query.actions.split(",") if a.strip()] if query.actions else None
        body = await state.service.predict_json(query.customer_id, actions, explain=query.explain)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", _JSON_BYTES), (b"content-length", b"%d" % len(body))]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})


predict_one = _PredictOne()


async def predict_batch(request: Request) -> Response:
    """``POST /v1/predict``: up to 1,000 customers, scored as one batch."""
    state = _state(request)
    data = PredictBatch.model_validate(await read_json(request, state.max_body_bytes))
    if data.features is not None:
        from propensity.serving.service import FeatureInputError

        try:
            body = state.service.predict_features(data.features, data.actions, customer_id=data.customer_id)
        except FeatureInputError as exc:
            raise ApiError(422, "invalid_features", str(exc), field=exc.problems[0]["field"],
                           errors=exc.problems[:100]) from None  # fmt: skip
        return json_response(body)
    assert data.customer_ids is not None
    body = await state.service.apredict_many(data.customer_ids, data.actions)
    return json_response(body)


# ------------------------------------------------------------------------------------------------ events


def _event_list(data: Any) -> list[Any]:
    """The events of a body (an event, a list, or ``{"events": [...]}``), checked against :class:`Event`."""
    if isinstance(data, dict) and "events" in data:
        unknown = sorted(k for k in data if k != "events")
        if unknown:
            raise ApiError(
                422, "invalid_field", f"unknown field {unknown[0]!r} beside events", field=unknown[0]
            )
        batch = data["events"]
        if not isinstance(batch, list):
            raise ApiError(422, "invalid_field", "events must be a list of event objects", field="events")
    elif isinstance(data, list):
        batch = data
    elif isinstance(data, dict):
        batch = [data]
    else:
        raise ApiError(
            422, "invalid_body", 'send an event object, a list, or {"events": [...]}', field="body"
        )
    if not batch:
        raise ApiError(422, "invalid_events", "the batch is empty", field="events")
    if len(batch) > MAX_EVENTS:
        raise ApiError(422, "batch_too_large", f"a batch holds at most {MAX_EVENTS} events", field="events")
    problems = [p for i, ev in enumerate(batch) for p in event_name_problems(i, ev)]
    if not problems:
        try:
            _EVENTS.validate_python(batch)
        except ValidationError as exc:
            for e in exc.errors(include_url=False, include_input=False):
                index, *rest = e["loc"]
                message = str(e["msg"]).removeprefix("Value error, ")
                problems.append(
                    {"index": index, "field": str(rest[0]) if rest else "event", "message": message}
                )
    if problems:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        message = f"event {first['index']}: {first['field']}: {first['message']}{more}; nothing was written"
        raise ApiError(422, "invalid_events", message, field=first["field"], errors=problems[:100])
    return batch


def _activate_safely(activator: RealtimeActivator, ids: list[str], predictions: dict[str, Any]) -> None:
    try:
        activator.on_customers_changed(ids, predictions)
    except Exception:  # a destination's failure must not take the server down; the outbox retries webhooks
        log.exception("real-time activation failed for %d customers", len(ids))


async def events(request: Request) -> Response:
    """``POST /v1/events``: validated, durable in the server's spool, applied online, then answered."""
    state = _state(request)
    if state.workspace is None:
        raise ApiError(503, "ingest_disabled", "this server was started without a workspace to write to")
    batch = _event_list(await read_json(request, state.max_body_bytes))
    if state.live is None:
        from propensity.serving.live import LivePath

        state.live = await run_in_threadpool(LivePath.attach, state.workspace, state.service.store)
    live = state.live
    try:
        result = await run_in_threadpool(live.accept, batch)
    except RejectedBatch:
        state.metrics.batches_rejected.inc()
        raise
    except SpoolError as exc:
        log.error("live spool write failed: %s", exc)
        raise ApiError(503, "spool_unavailable", "the events could not be made durable; retry") from None
    # Durable now (in the spool); apply to the online store before answering, so the next prediction reflects
    # it. A shared store (Redis) may know ids this server has not seen (another replica took them): what it
    # applied is what was new.
    accepted = await state.service.apply(result.events) if result.events.num_rows else 0
    live.remember(result.hashes)
    duplicates = result.received - accepted
    state.metrics.events_applied(result.events, accepted, duplicates)
    response = json_response({"received": result.received, "accepted": accepted, "duplicates": duplicates})
    realtime = state.realtime
    if realtime is not None and realtime.destinations and accepted:
        # Rescore the customers the events touched now, then hand the decisions to the activator after the
        # answer is sent (it sends only changed ones).
        ids = list(dict.fromkeys(str(c) for c in result.events.column("customer_id").to_pylist()))
        predictions = {c: await state.service.apredict(c) for c in ids}
        response.background = BackgroundTask(_activate_safely, realtime, ids, predictions)
    return response


# -------------------------------------------------------------------------------------------- attributes


async def attributes(request: Request) -> Response:
    """``POST /v1/attributes``: rows of an attribute source, checked against it, durable in the workspace (one
    transaction under its lock), applied online, then answered."""
    from propensity.events.live_attributes import AttributeRowsError, append_attributes
    from propensity.workspace import WorkspaceLockedError

    state = _state(request)
    if state.workspace is None:
        raise ApiError(503, "ingest_disabled", "this server was started without a workspace to write to")
    body = AttributesBody.model_validate(await read_json(request, state.max_body_bytes))
    workspace = state.workspace
    try:
        versions = await run_in_threadpool(
            append_attributes, workspace, body.rows, source_name=body.source, now=state.service.now()
        )
    except AttributeRowsError as exc:
        raise ApiError(422, "invalid_attributes", str(exc), field=exc.problems[0]["field"],
                       errors=exc.problems[:100]) from None  # fmt: skip
    except WorkspaceLockedError:
        raise ApiError(503, "workspace_busy", "another process holds the workspace (a training or an ingest); "
                       "nothing was written: retry shortly", headers={"Retry-After": "5"}) from None  # fmt: skip
    # Durable now; apply before answering so the next prediction reads them, and tell the live sync they are
    # ours (not a reload of the source by another process).
    await state.service.apply_attributes([v.as_row() for v in versions])
    if state.live is not None:
        state.live.remember_attributes(versions)
    source = versions[0].source
    return json_response({"source": source, "rows": len(body.rows), "versions": len(versions)})


# ------------------------------------------------------------------------------------------------ models


def _served(state: ServerState) -> dict[str, Any] | None:
    model = state.service.model
    if model is None:
        return None
    canary = state.service.canary
    return {
        "model_version": model.version,
        "feature_set_version": model.feature_set_version,
        "actions": list(model.action_names),
        "scorer": model.scorer.backend,
        "canary": None
        if canary is None
        else {"model_version": canary.loaded.model.version, "share": canary.share},
    }


def _workspace(state: ServerState) -> Any:
    if state.workspace is None:
        raise ApiError(503, "no_workspace", "this server was started without a workspace")
    return state.workspace


async def models(request: Request) -> Response:
    state = _state(request)
    bundles = await run_in_threadpool(registry_entries, state.workspace) if state.workspace else []
    return json_response({"serving": _served(state), "bundles": bundles})


async def promote(request: Request) -> Response:
    state = _state(request)
    ws = _workspace(state)
    version = ModelVersionPath.model_validate(request.path_params).version
    body = Promote.model_validate(
        await read_json(request, state.max_body_bytes) if _has_body(request) else {}
    )
    model, gate = await run_in_threadpool(promote_and_load, ws, version, force=body.force, reason=body.reason)
    previous = state.service.swap(model)  # in-flight requests finish on the model they started with
    return json_response(
        {"serving": _served(state), "previous": None if previous is None else previous.version, "gate": gate}
    )


async def rollback(request: Request) -> Response:
    state = _state(request)
    model = await run_in_threadpool(rollback_and_load, _workspace(state))
    previous = state.service.swap(model)
    return json_response(
        {"serving": _served(state), "previous": None if previous is None else previous.version}
    )


async def canary(request: Request) -> Response:
    state = _state(request)
    ws = _workspace(state)
    body = Canary.model_validate(await read_json(request, state.max_body_bytes))
    if body.share == 0:
        state.service.set_canary(None)
    else:
        model = await run_in_threadpool(load_canary, ws, body.model_version)
        state.service.set_canary(model, float(body.share))
    return json_response({"serving": _served(state)})


_BAD_INPUT = (422, "A parameter or field is invalid (the error names it).")
_NO_STORE = (503, "No model is loaded, or the online store (Redis) is unavailable: retry shortly.")

ENDPOINTS = [
    Endpoint("/v1/predict", "GET", "predict", predict_one, "Score one customer for every action (or some)",
             scope="predict", query=PredictQuery, ok=Prediction, raw=True,
             responses={422: (_BAD_INPUT[1], None), 503: (_NO_STORE[1], None)}),
    Endpoint("/v1/predict", "POST", "predict_batch", predict_batch, "Score up to 1,000 customers as one batch",
             scope="predict", body=PredictBatch, ok=BatchPrediction,
             responses={422: (_BAD_INPUT[1], None), 503: (_NO_STORE[1], None)}),
    Endpoint("/v1/events", "POST", "events", events,
             "Append events (one, or a batch of up to 10,000) and apply them to online features",
             description="Validated with the bulk ingest's rules; a batch with any invalid event is rejected "
             "whole (nothing written) and `errors` lists each event's index and field. Accepted events are "
             "durably in the event log before the response, and the next prediction reflects them.",
             scope="ingest", body=EventsBody, ok=EventsAccepted, ok_description="Accepted: new and duplicate counts.",
             responses={422: ("Invalid events; `errors` lists each event index and field.", None),
                        503: ("Ingest is not enabled here (no workspace), or the online store is unavailable "
                              "(the events are durable; they are applied once it is back).", None)}),
    Endpoint("/v1/attributes", "POST", "attributes", attributes,
             "Write customer attributes (rows of a declared attribute source) and apply them to online features",
             description="Rows use the source's own column names (its customer id column, optionally its "
             "valid_from column, attribute columns). A batch with any row that does not fit the source is "
             "rejected whole (nothing written) and `errors` names each row and column. Accepted rows are "
             "durable in the workspace before the response, and the next prediction reads them.",
             scope="ingest", body=AttributesBody, ok=AttributesAccepted,
             ok_description="Written: rows received and attribute versions written.",
             responses={422: ("Rows that do not fit the source; `errors` names each row and column.", None),
                        503: ("Ingest is not enabled here (no workspace), or the workspace is busy (retry).",
                              None)}),
    Endpoint("/v1/models", "GET", "models", models, "The served model and the registry's bundles",
             scope="admin", ok=Models),
    Endpoint("/v1/models/rollback", "POST", "rollback", rollback,
             "Roll production back to the previous bundle and swap it in", scope="admin", ok=Moved,
             responses={409: ("Nothing to roll back to, or that bundle is corrupted.", None),
                        503: ("This server has no workspace.", None)}),
    Endpoint("/v1/models/canary", "POST", "canary", canary,
             "Route a share of customers (a stable hash of the id) to a candidate bundle",
             description="share 0 stops the canary. Without model_version, the newest candidate.",
             scope="admin", body=Canary, ok=Moved,
             responses={404: ("No such bundle.", None),
                        409: ("No candidate, the bundle is production, or it is corrupted.", None),
                        422: ("A field is invalid, or the model cannot be served.", None),
                        503: ("This server has no workspace.", None)}),
    Endpoint("/v1/models/{version}/promote", "POST", "promote", promote,
             "Promote a bundle through the gate and swap it in without failing requests", scope="admin",
             path_params=ModelVersionPath, body=Promote, body_required=False, ok=Moved,
             responses={404: ("No such bundle.", None),
                        409: ("Refused by the gate, already in production, or corrupted.", None),
                        422: ("A field is invalid, or the model cannot be served.", None),
                        503: ("This server has no workspace.", None)}),
]  # fmt: skip
