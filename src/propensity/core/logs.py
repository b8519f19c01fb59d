"""Logging for every propensity process: readable text, or one JSON object per line (``--log-format json``) for
log shippers, on standard error.

A JSON line holds ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message`` and every field passed with
``extra=`` (the server's access log adds ``request_id``, ``method``, ``path``, ``status``, ``duration_ms``),
plus ``exception`` when there is one. Nothing here logs request parameters or customer ids: callers keep raw
personal identifiers out of log records.

>>> import io, json, logging
>>> stream = io.StringIO()
>>> configure_logging("json", "info", stream=stream)
>>> logging.getLogger("propensity.demo").info("scored %d rows", 3, extra={"run": "r-1"})
>>> line = json.loads(stream.getvalue())
>>> line["level"], line["logger"], line["message"], line["run"]
('info', 'propensity.demo', 'scored 3 rows', 'r-1')
>>> configure_logging("text", "warning")
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any, Literal

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[str, ...] = ("text", "json")
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error", "critical")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


_configured: list[str] = []  # the format of the last configure_logging call, if any


def current_format() -> LogFormat | None:
    """The format the process's logging was configured with (None before :func:`configure_logging`)."""
    return check_format(_configured[-1]) if _configured else None


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for its fields)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class _Handler(logging.StreamHandler):
    """The handler :func:`configure_logging` installs (and replaces when called again)."""


def check_format(value: str) -> LogFormat:
    """``value`` as a log format, or a ValueError naming the allowed ones."""
    if value not in LOG_FORMATS:
        raise ValueError(f"log format {value!r}: use one of {', '.join(LOG_FORMATS)}")
    return value  # type: ignore[return-value]


def configure_logging(fmt: str = "text", level: str = "warning", *, stream: IO[str] | None = None) -> None:
    """Send the root logger's records at ``level`` and above to ``stream`` (standard error) as ``fmt``."""
    fmt = check_format(fmt)
    if level.lower() not in LOG_LEVELS:
        raise ValueError(f"log level {level!r}: use one of {', '.join(LOG_LEVELS)}")
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(handler)
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())
    _configured[:] = [fmt]
