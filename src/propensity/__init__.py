"""propensity: from raw behavioural events to calibrated, activation-ready propensity scores."""

from __future__ import annotations

__version__ = "0.1.0"
