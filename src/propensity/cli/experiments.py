"""`propensity experiments` and `propensity retrain`: holdouts, lift, uplift; champion vs challenger."""

from __future__ import annotations

from propensity.cli.app import app  # noqa: F401
