"""The route table: each endpoint declared once (path, method, handler, API key scope, models, documented
answers), from which both the Starlette routes and the OpenAPI document are built.

A feature adds its endpoints by listing them (see :data:`propensity.server.api.ENDPOINTS`); nothing else needs
to know.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from propensity.server.errors import JSON

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Endpoint:
    """One operation. ``handler`` takes a request and returns a response, or is an ASGI app (``raw=True``, for
    the hot path: it does its own key check). ``responses`` maps extra statuses to (description, model or None);
    the errors every operation of its kind can give (bad bodies, keys) are added by the document."""

    path: str
    method: str
    name: str
    handler: Any
    summary: str
    description: str = ""
    scope: str | None = None  # the API key scope needed; None: open
    query: Any = None  # a pydantic model whose fields are the query parameters
    path_params: Any = None  # a pydantic model of the path parameters
    body: Any = None  # a type (model or union) of the JSON body
    body_required: bool = True
    ok: Any = None  # the 200 answer's model (JSON), or None
    ok_description: str = "OK"
    ok_content_type: str = JSON
    responses: Mapping[int, tuple[str, Any]] = field(default_factory=dict)
    raw: bool = False
    tags: Sequence[str] = ()
    # Who may call it, when not an API key in a header: ``guard(request, scope)`` raises (401, or a redirect to a
    # login page) unless the caller may use ``scope`` (the console's session cookie, server/console/).
    guard: Callable[[Request, str], Awaitable[None]] | None = None
    # Listed in the OpenAPI document (the console's pages and data endpoints are not part of the API).
    in_schema: bool = True


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The API key a request presents: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None
    return headers.get("x-api-key")


async def _key_guard(request: Request, scope: str) -> None:
    keys = request.app.state.server.keys
    if keys.enabled:
        keys.check(presented_key(request.headers), scope)


def _guarded(
    handler: Handler, scope: str, guard: Callable[[Request, str], Awaitable[None]] = _key_guard
) -> Handler:
    async def guarded(request: Request) -> Response:
        await guard(request, scope)
        return await handler(request)

    guarded.__name__ = guarded.__qualname__ = getattr(handler, "__name__", "endpoint")
    return guarded


def routes(endpoints: Sequence[Endpoint]) -> list[Route]:
    """Starlette routes for ``endpoints``, in order (put the hottest first: the router tries them in turn)."""
    out = []
    for e in endpoints:
        app: ASGIApp | Handler
        app = e.handler if e.raw or e.scope is None else _guarded(e.handler, e.scope, e.guard or _key_guard)
        out.append(Route(e.path, app, methods=[e.method], name=e.name, include_in_schema=False))
    return out
