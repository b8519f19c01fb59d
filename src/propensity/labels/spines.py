"""Snapshot spines: the cutoffs at which training rows are taken.

Cutoffs sit on a grid ``align + k × slide`` (weekly, Monday 00:00 in the project's zone by default; a calendar
slide such as ``1mo`` steps whole months in that zone), from ``lookback`` after the first event to the last
cutoff whose label window fits in the data, or are the spine's explicit ``cutoffs`` list. Which cutoffs an action
may use (label matured) is decided per action by :func:`matured_cutoffs`.

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
from propensity.core.clock import is_matured, maturity_horizon
from propensity.core.errors import PropensityError


class NoDataError(PropensityError):
    """The event log has nothing to build training rows from."""


@dataclass(frozen=True)
class DataRange:
    """The span of the event log: first event time and where the data is complete up to."""

    start: datetime
    end: datetime


def data_range(con: duckdb.DuckDBPyConnection, settings: SpineSettings) -> DataRange:
    """The log's first event and where labels may have matured up to: the newest event, never later than a
    declared ``data_end`` (:func:`propensity.core.clock.maturity_horizon`; a declared end past the newest event
    would count windows nobody has seen as closed)."""
    rows = con.execute("SELECT min(event_time), max(event_time), count(*) FROM events").fetchall()
    first, last, n = rows[0]
    if not n:
        raise NoDataError("the event log is empty; ingest events first (`propensity ingest` or `quickstart`)")
    end = maturity_horizon(last, declared=settings.data_end)
    assert end is not None
    return DataRange(start=first, end=end)


def _ceil_grid(t: datetime, align: datetime, slide: timedelta) -> datetime:
    k = -((align - t) // slide)  # ceil((t - align) / slide)
    return align + k * slide


def grid_index_at_or_before(settings: SpineSettings, t: datetime, zone: str = "UTC") -> int:
    """The k of the latest grid point ``align + k × slide`` at or before ``t``."""
    slide = settings.slide
    if not slide.is_calendar:
        return (t - settings.align) // slide.timedelta
    # Months: estimate from the calendar, then step to the exact point (month lengths and DST vary).
    k = int((t - settings.align) / timedelta(days=30.436875 * slide.months))
    while slide.step(settings.align, k, zone) > t:
        k -= 1
    while slide.step(settings.align, k + 1, zone) <= t:
        k += 1
    return k


def grid_point(settings: SpineSettings, k: int, zone: str = "UTC") -> datetime:
    return settings.slide.step(settings.align, k, zone)


def grid_cutoffs(
    settings: SpineSettings, data_start: datetime, data_end: datetime, *, zone: str = "UTC"
) -> list[datetime]:
    """Every cutoff from ``data_start + lookback`` (or ``start``) to ``data_end`` (or ``end``): the grid points,
    or the explicit ``cutoffs`` in that range. ``zone`` is the project's (calendar slides step in it)."""
    if settings.cutoffs is not None:
        lo = settings.start or data_start
        hi = min(data_end, settings.end or data_end)
        return sorted(t for t in settings.cutoffs if lo <= t <= hi)
    # The history is counted from the grid point at or before the first event (data rarely starts at midnight).
    first = grid_point(settings, grid_index_at_or_before(settings, data_start, zone), zone)
    lo = max(first + settings.lookback.timedelta, settings.start or data_start)
    hi = min(data_end, settings.end or data_end)
    k = grid_index_at_or_before(settings, lo, zone)
    if grid_point(settings, k, zone) < lo:
        k += 1
    out = []
    t = grid_point(settings, k, zone)
    while t <= hi:
        out.append(t)
        k += 1
        t = grid_point(settings, k, zone)
    return out


def next_cutoff(settings: SpineSettings, cutoffs: list[datetime], t: datetime, zone: str = "UTC") -> datetime:
    """The cutoff after ``t``: the next grid point, or for explicit cutoffs the next in the list (after the
    last one, one gap as long as the last gap, or the slide when there is a single cutoff)."""
    if settings.cutoffs is None:
        return grid_point(settings, grid_index_at_or_before(settings, t, zone) + 1, zone)
    later = sorted(c for c in cutoffs if c > t)
    if later:
        return later[0]
    earlier = sorted(c for c in cutoffs if c <= t)
    if len(earlier) >= 2:
        return t + (earlier[-1] - earlier[-2])
    return settings.slide.step(t, 1, zone)


def matured_cutoffs(cutoffs: list[datetime], action: Action, data_end: datetime) -> list[datetime]:
    """The cutoffs whose label window (plus label delay) has closed by ``data_end``."""
    span = action.span.timedelta
    return [t for t in cutoffs if is_matured(t, span, data_end)]
