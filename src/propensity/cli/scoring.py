"""`propensity score`: batch scoring into the canonical score table."""

from __future__ import annotations

from propensity.cli.app import app  # noqa: F401
