"""Time helpers every stage shares: all times are timezone-aware UTC (DESIGN.md, "Time").

>>> from datetime import datetime, timedelta, timezone
>>> as_utc(datetime(2026, 3, 1, 8, 0)).isoformat()          # naive: taken as UTC
'2026-03-01T08:00:00+00:00'
>>> as_utc(datetime(2026, 3, 1, 9, 0, tzinfo=timezone(timedelta(hours=1)))).isoformat()
'2026-03-01T08:00:00+00:00'
>>> iso_z(datetime(2026, 3, 1, 8, 0))
'2026-03-01T08:00:00Z'

Wall-clock times in a project's own time zone are :func:`propensity.config.calendar.local_time`.
"""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(t: datetime) -> datetime:
    """``t`` in UTC; a naive ``t`` is taken to be UTC already."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def iso_z(t: datetime) -> str:
    """``t`` in UTC as ISO 8601 with a ``Z`` suffix."""
    return as_utc(t).isoformat().replace("+00:00", "Z")
