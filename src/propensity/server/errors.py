"""Errors as JSON, ``{"error": {"code", "message", "field"?, "errors"?}}``, mapped once for the whole app.

Handlers raise; Starlette's ``exception_handlers`` (registered by :func:`exception_handlers`) turn each error type
into its answer, so no route catches anything. No input yields a 5xx: an unexpected error is logged (never with
a customer id or a key) and answered 500 ``internal_error``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

from propensity.serving.auth import ForbiddenError, UnauthorizedError
from propensity.serving.ingest import RejectedBatch
from propensity.serving.models import ModelMoveError
from propensity.serving.service import NoModelError, UnknownActionError
from propensity.serving.store import StoreUnavailableError

log = logging.getLogger("propensity.server")

JSON = "application/json"


class ApiError(Exception):
    """An answer other than 2xx, raised by a handler: ``status``, a stable ``code``, a message naming the
    input at fault and, when one is, its ``field``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.field, self.errors, self.headers = field, errors, headers

    def response(self) -> Response:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.errors is not None:
            body["errors"] = self.errors
        return Response(orjson.dumps({"error": body}), self.status, self.headers, JSON)


def field_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as a field path: ``("customer_ids", 3)`` → ``customer_ids[3]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def invalid(
    exc: ValidationError, *, prefix: tuple[int | str, ...] = (), code: str = "invalid_field"
) -> ApiError:
    """A pydantic validation error as a 422 naming the first field at fault and listing every problem."""
    problems = []
    for e in exc.errors(include_url=False, include_input=False):
        loc = (*prefix, *e["loc"])
        message = str(e["msg"]).removeprefix("Value error, ")
        problems.append({"field": field_path(loc), "message": message})
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return ApiError(422, code, f"{first['field']}: {first['message']}{more}", field=first["field"],
                    errors=problems)  # fmt: skip


def _allowed(request: Request) -> list[str]:
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "\x00"})
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


Handler = Callable[[Request, Exception], Awaitable[Response]]


def _simple(
    status: int, code: str, field: str | None = None, headers: dict[str, str] | None = None
) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        return ApiError(status, code, str(exc), field=field, headers=headers).response()

    return handle


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return ApiError(404, "not_found", "no such endpoint; see /docs").response()
    if exc.status_code == 405:
        allow = ", ".join(_allowed(request))
        message = f"{request.method} is not allowed here; allowed: {allow}"
        return ApiError(405, "method_not_allowed", message, headers={"Allow": allow}).response()
    return ApiError(exc.status_code, "http_error", str(exc.detail), headers=exc.headers).response()


async def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    return invalid(exc).response()


async def _rejected(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RejectedBatch)
    first = exc.errors[0]
    errors = [e.to_json() for e in exc.errors]
    return ApiError(422, "invalid_events", str(exc), field=first.field, errors=errors).response()


async def _move(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ModelMoveError)
    return ApiError(exc.status, exc.code, str(exc)).response()


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected %s in %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc)
    return ApiError(500, "internal_error", "unexpected server error").response()


def exception_handlers() -> dict[Any, Handler]:
    """Every error type a route may raise, and its answer."""
    return {
        ApiError: _api_error,
        HTTPException: _http,
        ValidationError: _validation,
        UnauthorizedError: _simple(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"}),
        ForbiddenError: _simple(403, "forbidden"),
        UnknownActionError: _simple(422, "unknown_action", field="actions"),
        RejectedBatch: _rejected,
        ModelMoveError: _move,
        NoModelError: _simple(503, "no_model"),
        StoreUnavailableError: _simple(503, "store_unavailable", headers={"Retry-After": "1"}),
        Exception: _unexpected,
    }
