"""The ``propensity`` command. Each command group lives in its own module and is registered here."""

from __future__ import annotations

from propensity.cli.app import app, main

__all__ = ["app", "main"]
