"""The data clock of a workspace, read from its event log (see :mod:`propensity.core.clock` for the rules).

:func:`newest_event_time` is the one query every stage asks "how far does the data reach?"; :class:`DataClock`
bundles it with the project's ``clock`` setting and freshness threshold, so a command resolves its as-of and its
staleness warning the same way as every other.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from propensity.core.clock import as_utc, maturity_horizon, resolve_as_of, staleness
from propensity.events.log import open_event_log
from propensity.workspace import Workspace


def newest_event_time(con: duckdb.DuckDBPyConnection, as_of: datetime | None = None) -> datetime | None:
    """The newest ``event_time`` in the log, of the events visible at ``as_of`` (``available_at`` and
    ``event_time`` at or before it) when given; None for an empty log."""
    if as_of is None:
        row = con.execute("SELECT max(event_time) FROM events").fetchall()[0]
    else:
        row = con.execute(
            "SELECT max(event_time) FROM events WHERE available_at <= $t AND event_time <= $t", {"t": as_of}
        ).fetchall()[0]
    value = row[0]
    return None if value is None else as_utc(value)


def label_horizon(
    con: duckdb.DuckDBPyConnection, *, as_of: datetime | None = None, declared: datetime | None = None
) -> datetime | None:
    """Where labels may have matured up to, as of ``as_of``: the newest event visible then, capped by ``as_of``
    and the declared data end (:func:`propensity.core.clock.maturity_horizon`)."""
    return maturity_horizon(newest_event_time(con, as_of), as_of=as_of, declared=declared)


@dataclass(frozen=True)
class DataClock:
    """The project's clock setting, the log's newest event and the freshness threshold, read once."""

    clock: str
    newest_event: datetime | None
    threshold: timedelta
    now: datetime

    @classmethod
    def of(cls, con: duckdb.DuckDBPyConnection, spec: Any, *, now: datetime | None = None) -> DataClock:
        return cls(
            clock=spec.clock,
            newest_event=newest_event_time(con),
            threshold=spec.freshness_threshold,
            now=as_utc(now) if now is not None else datetime.now(UTC),
        )

    @classmethod
    def read(cls, workspace: Workspace, *, now: datetime | None = None) -> DataClock:
        """The workspace's clock (an empty log when there is no event log yet). Takes the workspace lock to
        read (another process may be appending), so call it before taking the lock yourself, or use :meth:`of`
        with the connection you hold."""
        empty = cls(workspace.spec.clock, None, workspace.spec.freshness_threshold, now or datetime.now(UTC))
        if not workspace.db_path.exists():
            return empty
        with workspace.write_lock(), open_event_log(workspace).connection(read_only=True) as con:
            try:
                return cls.of(con, workspace.spec, now=now)
            except (
                duckdb.CatalogException
            ):  # a workspace of labelled tables only: models and scores, no log yet
                return empty

    def seen_at(self, con: duckdb.DuckDBPyConnection, as_of: datetime) -> DataClock:
        """This clock with the newest event visible at ``as_of`` (a run about the past saw less)."""
        if self.newest_event is not None and self.newest_event <= as_of:
            return self
        return replace(self, newest_event=newest_event_time(con, as_of))

    def as_of(self, explicit: datetime | None = None) -> datetime:
        """``explicit``, else the log's end under ``clock: data``, else now."""
        return resolve_as_of(explicit, clock=self.clock, newest_event=self.newest_event, now=self.now)

    def warning(self, as_of: datetime | None = None) -> str | None:
        """Why working as of ``as_of`` (default: this clock's own) sees stale data, or None."""
        when = self.as_of(as_of)
        newest = self.newest_event if self.newest_event is None or self.newest_event <= when else None
        if newest is None:
            return None
        message = staleness(newest, now=when, threshold=self.threshold)
        if message is not None and as_of is not None:
            message = message.replace("as of now", "as of that time")
        return message

    def to_json(self, as_of: datetime | None = None) -> dict[str, Any]:
        when = self.as_of(as_of)
        newest = self.newest_event
        return {
            "clock": self.clock,
            "newest_event": None if newest is None else newest.isoformat(),
            "freshness_threshold_hours": self.threshold.total_seconds() / 3600.0,
            "data_age_hours": None if newest is None else round((when - newest).total_seconds() / 3600.0, 3),
            "stale": self.warning(as_of) is not None,
        }
