"""The HTTP API (routes only): ``create_app(ServerState(...))`` gives the ASGI app; ``propensity serve`` runs it."""

from propensity.server.app import create_app
from propensity.server.state import ServerState

__all__ = ["ServerState", "create_app"]
