"""The HTTP API (routes only): ``create_app(ServerState(...))`` gives the ASGI app; ``propensity serve`` runs it."""

from propensity.server.app import ServerState, create_app

__all__ = ["ServerState", "create_app"]
