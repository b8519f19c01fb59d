"""Durations written the way people write them in a spec: ``15m``, ``12h``, ``7d``, ``2w``, ``lifetime``.

A :class:`Duration` is a whole number of seconds (or unbounded, for ``lifetime``); it is the one type every
window, horizon, delay and gap in ``propensity.yaml`` uses, so every section parses time spans the same way.

>>> Duration.parse("7d").seconds
604800
>>> str(Duration.parse("90m"))
'90m'
>>> Duration.parse("lifetime").is_lifetime
True
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema

_UNITS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PATTERN = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
LIFETIME = "lifetime"
DURATION_HELP = "use forms like 30d, 12h, 90m, 45s, 2w"


class Duration:
    """A non-negative span of time in whole seconds, or the unbounded ``lifetime``."""

    __slots__ = ("_seconds",)

    def __init__(self, seconds: int | None) -> None:
        if seconds is not None and seconds < 0:
            raise ValueError(f"a duration cannot be negative (got {seconds}s)")
        self._seconds = seconds

    @classmethod
    def parse(cls, value: Any, *, allow_lifetime: bool = True) -> Duration:
        """Parse ``'30d'``, ``'12h'``, ``'lifetime'``, a :class:`timedelta` or a Duration."""
        if isinstance(value, Duration):
            if value.is_lifetime and not allow_lifetime:
                raise ValueError(f"'lifetime' is not allowed here; {DURATION_HELP}")
            return value
        if isinstance(value, timedelta):
            return cls(int(value.total_seconds()))
        if isinstance(value, bool) or not isinstance(value, str):
            raise ValueError(f"{value!r} is not a duration; {DURATION_HELP}")
        text = value.strip().lower()
        if text == LIFETIME:
            if not allow_lifetime:
                raise ValueError(f"'lifetime' is not allowed here; {DURATION_HELP}")
            return cls(None)
        match = _PATTERN.match(text)
        if not match:
            extra = " or lifetime" if allow_lifetime else ""
            raise ValueError(f"{value!r} is not a duration; {DURATION_HELP}{extra}")
        return cls(int(match.group(1)) * _UNITS[match.group(2)])

    @property
    def is_lifetime(self) -> bool:
        return self._seconds is None

    @property
    def seconds(self) -> int:
        if self._seconds is None:
            raise ValueError("'lifetime' has no finite length")
        return self._seconds

    @property
    def timedelta(self) -> timedelta:
        return timedelta(seconds=self.seconds)

    def __str__(self) -> str:
        if self._seconds is None:
            return LIFETIME
        if self._seconds == 0:
            return "0s"
        for unit in ("d", "h", "m"):
            size = _UNITS[unit]
            if self._seconds % size == 0:
                return f"{self._seconds // size}{unit}"
        return f"{self._seconds}s"

    def __repr__(self) -> str:
        return f"Duration({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Duration) and other._seconds == self._seconds

    def __hash__(self) -> int:
        return hash(self._seconds)


def _parse_finite(value: Any) -> Duration:
    return Duration.parse(value, allow_lifetime=False)


def _parse_window(value: Any) -> Duration:
    return Duration.parse(value, allow_lifetime=True)


# Pydantic field types: a finite span (horizons, delays, gaps) and a window that may be ``lifetime``.
_JSON_SCHEMA = WithJsonSchema(
    {"type": "string", "pattern": r"^\d+[smhdw]$|^lifetime$", "examples": ["7d", "12h"]}
)
FiniteDuration = Annotated[
    Duration, PlainValidator(_parse_finite), PlainSerializer(str, return_type=str), _JSON_SCHEMA
]
WindowDuration = Annotated[
    Duration, PlainValidator(_parse_window), PlainSerializer(str, return_type=str), _JSON_SCHEMA
]
