"""The base of every error propensity raises on purpose."""

from __future__ import annotations


class PropensityError(Exception):
    """Base class for every error propensity raises on purpose; the CLI prints these without a traceback."""
