"""propensity: from raw behavioural events to calibrated, activation-ready propensity scores."""

from __future__ import annotations

from propensity.core.version import __version__

__all__ = ["__version__"]
