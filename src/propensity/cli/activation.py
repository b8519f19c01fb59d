"""`propensity activate`: validation gates, then delivery to the declared destinations."""

from __future__ import annotations

from propensity.cli.app import app  # noqa: F401
