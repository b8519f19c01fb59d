"""The project's calendar: its time zone, times written without an offset, and calendar-month steps.

A project declares one time zone (``timezone:`` in ``propensity.yaml``, UTC by default). A time written without
an offset (``2017-12-01``, ``2017-12-01 08:00``) is a wall-clock time there: a date alone means its midnight.
Calendar slides (``1mo``) step from one local date to the same day of the next month, at the same wall time,
whatever the daylight-saving rules do in between. Internally every time is a timezone-aware UTC datetime.

>>> local_time("2017-12-01", "America/New_York").isoformat()
'2017-12-01T05:00:00+00:00'
>>> [t.isoformat() for t in (add_months(local_time("2017-01-31", "UTC"), k, "UTC") for k in (1, 2))]
['2017-02-28T00:00:00+00:00', '2017-03-31T00:00:00+00:00']
>>> str(Slide.parse("1mo")), Slide.parse("7d").timedelta.days
('1mo', 7)
"""

from __future__ import annotations

import calendar
import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import PlainSerializer, PlainValidator, ValidationInfo, WithJsonSchema

from propensity.config.durations import DURATION_HELP, Duration

DEFAULT_ZONE = "UTC"
TIME_HELP = "use ISO 8601, e.g. 2017-12-01, 2017-12-01T08:00 or 2017-12-01T08:00:00Z"
_MONTHS = re.compile(r"^\s*(\d+)\s*mo\s*$")


def zone_of(name: str) -> ZoneInfo:
    """The IANA zone ``name``; a clear error for anything else."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{name!r} is not a time zone; use an IANA name such as UTC, Europe/Paris, America/New_York"
        ) from None


def check_zone(name: str) -> str:
    zone_of(name)
    return name


def local_time(value: Any, zone: str = DEFAULT_ZONE) -> datetime:
    """A UTC datetime from a datetime, a date or an ISO 8601 string; without an offset it is a wall-clock time
    in ``zone`` (a date alone: its midnight)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is not a time; {TIME_HELP}") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):
        raise ValueError(f"{value!r} is not a time; {TIME_HELP}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=zone_of(zone))
    return value.astimezone(UTC)


def context_zone(info: ValidationInfo | None) -> str:
    """The project's zone while a spec is validated (``parse_spec`` passes it as validation context)."""
    ctx = info.context if info is not None else None
    if isinstance(ctx, dict) and isinstance(ctx.get("timezone"), str):
        return str(ctx["timezone"])
    return DEFAULT_ZONE


def _validate_local(value: Any, info: ValidationInfo) -> datetime:
    return local_time(value, context_zone(info))


# A spec field holding a time: an offset-less value is read in the project's time zone; stored as UTC.
LocalDateTime = Annotated[
    datetime,
    PlainValidator(_validate_local),
    PlainSerializer(lambda t: t.isoformat().replace("+00:00", "Z"), return_type=str),
    WithJsonSchema(
        {"type": "string", "format": "date-time", "examples": ["2017-12-01", "2017-12-01T08:00:00Z"]}
    ),
]


def add_months(t: datetime, months: int, zone: str = DEFAULT_ZONE) -> datetime:
    """``t`` moved by whole calendar months in ``zone``: same wall time, same day of month (the month's last day
    when it is shorter)."""
    z = zone_of(zone)
    local = t.astimezone(z)
    index = local.year * 12 + (local.month - 1) + months
    year, month = divmod(index, 12)
    month += 1
    day = min(local.day, calendar.monthrange(year, month)[1])
    moved = datetime(year, month, day, local.hour, local.minute, local.second, local.microsecond, tzinfo=z)
    return moved.astimezone(UTC)


class Slide:
    """The step between cutoffs: a fixed :class:`Duration` (``7d``) or whole calendar months (``1mo``)."""

    __slots__ = ("duration", "months")

    def __init__(self, *, duration: Duration | None = None, months: int = 0) -> None:
        if (duration is None) == (months == 0):
            raise ValueError("a slide is either a duration or a number of months")
        if months < 0 or (duration is not None and (duration.is_lifetime or duration.seconds == 0)):
            raise ValueError("a slide must be longer than 0s, e.g. 7d or 1mo")
        self.duration = duration
        self.months = months

    @classmethod
    def parse(cls, value: Any) -> Slide:
        if isinstance(value, Slide):
            return value
        if isinstance(value, str):
            m = _MONTHS.match(value.lower())
            if m:
                if int(m.group(1)) == 0:
                    raise ValueError("a slide must be longer than 0s, e.g. 7d or 1mo")
                return cls(months=int(m.group(1)))
        try:
            d = Duration.parse(value, allow_lifetime=False)
        except ValueError:
            raise ValueError(
                f"{value!r} is not a slide; {DURATION_HELP}, or whole months: 1mo, 3mo"
            ) from None
        return cls(duration=d)

    @property
    def is_calendar(self) -> bool:
        return self.months > 0

    @property
    def timedelta(self) -> timedelta:
        """The exact step of a fixed slide; for months a typical length (30 days a month), only for code that
        needs a length rather than cutoff positions (monitoring windows)."""
        if self.duration is not None:
            return self.duration.timedelta
        return timedelta(days=30 * self.months)

    @property
    def seconds(self) -> int:
        return int(self.timedelta.total_seconds())

    def step(self, t: datetime, k: int, zone: str = DEFAULT_ZONE) -> datetime:
        """``t`` moved by ``k`` slides (calendar months in ``zone`` for a calendar slide)."""
        if self.duration is not None:
            return t + k * self.duration.timedelta
        return add_months(t, k * self.months, zone)

    def __str__(self) -> str:
        return f"{self.months}mo" if self.months else str(self.duration)

    def __repr__(self) -> str:
        return f"Slide({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Slide) and (other.months, other.duration) == (self.months, self.duration)

    def __hash__(self) -> int:
        return hash((self.months, self.duration))


SlideType = Annotated[
    Slide,
    PlainValidator(Slide.parse),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^\d+([smhdw]|mo)$", "examples": ["7d", "1mo"]}),
]
