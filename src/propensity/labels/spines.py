"""Snapshot spines: the cutoffs at which training rows are taken.

Cutoffs sit on a grid ``align + k × slide`` (weekly, Monday 00:00 UTC by default), from ``lookback`` after the
first event to the last cutoff whose label window fits in the data. Which cutoffs an action may use (label
matured) is decided per action by :func:`matured_cutoffs`.

>>> from datetime import datetime, UTC
>>> from propensity.config.training import SpineSettings
>>> s = SpineSettings(slide="7d", lookback="14d")
>>> cs = grid_cutoffs(s, datetime(2024, 1, 3, tzinfo=UTC), datetime(2024, 2, 10, tzinfo=UTC))
>>> [c.date().isoformat() for c in cs]
['2024-01-15', '2024-01-22', '2024-01-29', '2024-02-05']
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

from propensity.config.actions import Action
from propensity.config.training import SpineSettings
from propensity.core.errors import PropensityError


class NoDataError(PropensityError):
    """The event log has nothing to build training rows from."""


@dataclass(frozen=True)
class DataRange:
    """The span of the event log: first event time and where the data is complete up to."""

    start: datetime
    end: datetime


def data_range(con: duckdb.DuckDBPyConnection, settings: SpineSettings) -> DataRange:
    rows = con.execute("SELECT min(event_time), max(event_time), count(*) FROM events").fetchall()
    first, last, n = rows[0]
    if not n:
        raise NoDataError("the event log is empty; ingest events first (`propensity ingest` or `quickstart`)")
    return DataRange(start=first, end=settings.data_end or last)


def _ceil_grid(t: datetime, align: datetime, slide: timedelta) -> datetime:
    k = -((align - t) // slide)  # ceil((t - align) / slide)
    return align + k * slide


def grid_cutoffs(settings: SpineSettings, data_start: datetime, data_end: datetime) -> list[datetime]:
    """Every grid cutoff from ``data_start + lookback`` (or ``start``) to ``data_end`` (or ``end``)."""
    slide = settings.slide.timedelta
    # The history is counted from the grid point at or before the first event (data rarely starts at midnight).
    first = _ceil_grid(data_start, settings.align, slide)
    first = first - slide if first > data_start else first
    lo = max(first + settings.lookback.timedelta, settings.start or data_start)
    hi = min(data_end, settings.end or data_end)
    out = []
    t = _ceil_grid(lo, settings.align, slide)
    while t <= hi:
        out.append(t)
        t += slide
    return out


def matured_cutoffs(cutoffs: list[datetime], action: Action, data_end: datetime) -> list[datetime]:
    """The cutoffs whose label window (plus label delay) has closed by ``data_end``."""
    span = action.span.timedelta
    return [t for t in cutoffs if t + span <= data_end]
