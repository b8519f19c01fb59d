"""``propensity console``: the console alone, for a workspace without a running API (no online store is
loaded and nothing is scored live; promotions move the registry, which a running server follows)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from propensity.server.console.routes import ENDPOINTS, ConsoleState
from propensity.server.endpoints import Endpoint, routes
from propensity.server.errors import exception_handlers
from propensity.serving.auth import KeyRing
from propensity.workspace import Workspace


async def _home(request: Request) -> Response:
    return RedirectResponse("/console", 307)


async def _healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


def warm() -> None:
    """Import what the data endpoints use (LightGBM and scikit-learn among them) now, not on the first page."""
    import propensity.experiments.report
    import propensity.experiments.targeting
    import propensity.monitoring.views
    import propensity.registry.gate
    import propensity.scoring.lookup  # noqa: F401


def create_console_app(workspace: Workspace, keys: KeyRing) -> Starlette:
    """The console's pages and data endpoints over ``workspace``, signed in with ``keys``."""
    warm()
    endpoints = [
        *ENDPOINTS,
        Endpoint("/", "GET", "home", _home, "To the console", in_schema=False),
        Endpoint("/healthz", "GET", "healthz", _healthz, "Liveness", in_schema=False),
    ]
    app = Starlette(routes=routes(endpoints), exception_handlers=exception_handlers())
    app.state.console = ConsoleState(workspace.root, keys)
    app.state.endpoints = endpoints
    return app
