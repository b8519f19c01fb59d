"""The data's clock: what "now" means for a project, when its data is stale, and when a label has matured.

Two notions of time meet in every command that takes an as-of (score, monitor, features, serve):

* the **wall clock**, for a live project whose events keep arriving (``clock: live``, the default);
* the **data clock**, the end of the event log (``clock: data``), for a project that replays a fixed history
  (the example projects, a demo, a backtest).

Whatever the clock, the newest event in the log bounds two things. A live command that runs more than the
freshness threshold after the newest event is looking at silence, and says so (:func:`staleness`). And a label
window that reaches past the newest event has not matured, whatever the wall clock says: events that would
decide it have not been seen yet (:func:`maturity_horizon`, :func:`is_matured`). Every stage that counts
matured labels (training, the leakage audit, monitoring, experiments, retraining) takes its horizon from here.

>>> from datetime import datetime, timedelta, UTC
>>> newest = datetime(2026, 3, 1, tzinfo=UTC)
>>> now = newest + timedelta(days=10)
>>> resolve_as_of(None, clock="live", newest_event=newest, now=now) == now
True
>>> resolve_as_of(None, clock="data", newest_event=newest, now=now) == newest
True
>>> maturity_horizon(newest, as_of=now) == newest
True
>>> is_matured(newest - timedelta(days=7), timedelta(days=7), newest)
True
>>> staleness(newest, now=now, threshold=timedelta(hours=24)).split(":")[0]
"the event log's newest event is from 2026-03-01 00"

All times are timezone-aware UTC (DESIGN.md, "Time"):

>>> from datetime import timezone
>>> as_utc(datetime(2026, 3, 1, 8, 0)).isoformat()          # naive: taken as UTC
'2026-03-01T08:00:00+00:00'
>>> as_utc(datetime(2026, 3, 1, 9, 0, tzinfo=timezone(timedelta(hours=1)))).isoformat()
'2026-03-01T08:00:00+00:00'
>>> iso_z(datetime(2026, 3, 1, 8, 0))
'2026-03-01T08:00:00Z'

Wall-clock times in a project's own time zone are :func:`propensity.config.calendar.local_time`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

Clock = Literal["live", "data"]
STALE_PREFIX = "the event log's newest event is from"
CLOCKS: tuple[str, ...] = ("live", "data")


def as_utc(t: datetime) -> datetime:
    """``t`` in UTC; a naive ``t`` is taken to be UTC already."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def iso_z(t: datetime) -> str:
    """``t`` in UTC as ISO 8601 with a ``Z`` suffix."""
    return as_utc(t).isoformat().replace("+00:00", "Z")


def resolve_as_of(
    explicit: datetime | None, *, clock: str, newest_event: datetime | None, now: datetime | None = None
) -> datetime:
    """The time a command works as of: ``explicit`` when given, else the log's end under ``clock: data`` (the
    wall clock when the log is empty), else now."""
    if explicit is not None:
        return as_utc(explicit)
    now = as_utc(now) if now is not None else datetime.now(UTC)
    if clock == "data" and newest_event is not None:
        return as_utc(newest_event)
    return now


def maturity_horizon(
    newest_event: datetime | None, *, as_of: datetime | None = None, declared: datetime | None = None
) -> datetime | None:
    """The latest time a label window may end at and count as matured: the newest event seen (by ``as_of``),
    never later than ``as_of`` or a ``declared`` data end (``training.spine.data_end``). None: nothing seen."""
    if newest_event is None:
        return None
    bounds = [as_utc(newest_event)]
    bounds += [as_utc(t) for t in (as_of, declared) if t is not None]
    return min(bounds)


def is_matured(window_start: datetime, span: timedelta, horizon: datetime | None) -> bool:
    """Whether a label window starting at ``window_start`` and closing ``span`` later (gap + horizon + label
    delay) has closed by ``horizon`` (from :func:`maturity_horizon`)."""
    return horizon is not None and as_utc(window_start) + span <= as_utc(horizon)


def data_age(newest_event: datetime | None, *, now: datetime) -> timedelta | None:
    """How long before ``now`` the newest event happened (None for an empty log)."""
    if newest_event is None:
        return None
    return as_utc(now) - as_utc(newest_event)


def fmt_age(age: timedelta) -> str:
    hours = age.total_seconds() / 3600.0
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"


def fmt_threshold(threshold: timedelta) -> str:
    s = int(threshold.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s and s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


def staleness(newest_event: datetime | None, *, now: datetime, threshold: timedelta) -> str | None:
    """A warning when the newest event is older than ``threshold`` at ``now`` (None when it is fresh, or the
    log is empty)."""
    age = data_age(newest_event, now=now)
    if age is None or newest_event is None or age <= threshold:
        return None
    return (
        f"{STALE_PREFIX} {as_utc(newest_event):%Y-%m-%d %H:%M} UTC, {fmt_age(age)} before "
        f"{as_utc(now):%Y-%m-%d %H:%M} UTC (more than the freshness threshold of {fmt_threshold(threshold)}): "
        "scores, monitors and features as of now see that silence; set `clock: data` in propensity.yaml to "
        "work as of the log's end, or ingest the missing events"
    )
