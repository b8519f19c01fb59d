"""The server's access log: one record per request with a request id, as text or JSON (``core.logs``).

A pure ASGI middleware around the app (``propensity serve --access-log``). The request id is the caller's
``X-Request-ID`` when it is a short token (letters, digits, ``._-``, at most 128), else a new random one; it is
returned in the response's ``X-Request-ID`` header and logged with the method, the path (never the query string,
which holds customer ids), the status and the duration. Records go to the ``propensity.access`` logger at INFO.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADER = b"x-request-id"
_TOKEN = re.compile(rb"^[A-Za-z0-9._-]{1,128}$")
log = logging.getLogger("propensity.access")


def request_id(scope: Scope) -> str:
    """The caller's ``X-Request-ID`` when it is a plain token, else a new one."""
    for name, value in scope.get("headers") or ():
        if name == HEADER and _TOKEN.match(value):
            return str(value.decode("ascii"))
    return uuid.uuid4().hex


class AccessLogMiddleware:
    """Wraps an ASGI app: tags each HTTP request with an id (response header) and logs it when it ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), (HEADER, rid.encode("ascii"))]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            ms = round((time.perf_counter() - started) * 1000.0, 3)
            method, path = scope.get("method", ""), scope.get("path", "")
            log.info(
                "%s %s %d %.1fms",
                method,
                path,
                status,
                ms,
                extra={
                    "request_id": rid,
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": ms,
                },
            )
