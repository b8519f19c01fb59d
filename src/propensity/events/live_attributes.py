"""Attribute rows sent live (``POST /v1/attributes``): checked against a declared attribute source, then appended
to the ``attributes`` table in one transaction under the workspace lock, all or nothing.

A row has the source's own column names, as a file of that source would: its ``customer_id`` column, optionally
its ``valid_from`` column (``valid_from`` when the source declares none), and attribute columns: the source's
``attributes:`` list when it declares one, else the attributes the project's features and eligibility rules read
plus those the source already holds. Values are text, numbers, booleans or null and are stored as text, as file
ingest stores them. A row's ``available_at`` is the time it is accepted (as for live events); its ``valid_from``
defaults to that time, so a change sent now supersedes what the file said.

Unlike a reload of the source by ``propensity ingest`` (which replaces the source's rows), live rows are added:
they are new versions beside the loaded ones, until the next reload replaces them all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa

from propensity.config.features import AttributeFeature
from propensity.config.spec import AttributeSource, ProjectSpec
from propensity.core.errors import PropensityError
from propensity.events.log import open_event_log, transaction
from propensity.workspace import Workspace

MAX_ROWS = 10_000
MAX_VALUE_LENGTH = 4096
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class AttributeRowsError(PropensityError):
    """Rows that do not fit the attribute source; ``problems`` lists each (``field``: ``rows[i].column``)."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        first = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{first['field']}: {first['message']}{more}; nothing was written")
        self.problems = problems


@dataclass(frozen=True)
class AttributeVersion:
    """One attribute version as the online store takes it (times in epoch microseconds)."""

    customer_id: str
    attribute: str
    value: str | None
    valid_from: int
    available_at: int
    source: str

    def as_row(self) -> dict[str, Any]:
        return {"customer_id": self.customer_id, "attribute": self.attribute, "value": self.value,
                "valid_from": self.valid_from, "available_at": self.available_at, "source": self.source}  # fmt: skip


def attribute_source(spec: ProjectSpec, name: str | None) -> AttributeSource:
    """The declared attribute source called ``name`` (the only one when ``name`` is None)."""
    declared = {s.name: s for s in spec.attributes}
    if name is None:
        if len(declared) == 1:
            return next(iter(declared.values()))
        raise AttributeRowsError([{
            "field": "source",
            "message": "name the attribute source (this project declares "
            + (", ".join(sorted(declared)) if declared else "none: add one under attributes: in propensity.yaml")
            + ")",
        }])  # fmt: skip
    if name not in declared:
        raise AttributeRowsError([{
            "field": "source",
            "message": f"no attribute source {name!r} in propensity.yaml (declared: "
            f"{', '.join(sorted(declared)) or 'none'})",
        }])  # fmt: skip
    return declared[name]


def _read_attributes(spec: ProjectSpec, source: AttributeSource) -> set[str]:
    """The attributes of ``source`` that the project's features and eligibility rules read."""
    names = {f.attribute for f in spec.features
             if isinstance(f, AttributeFeature) and f.source in (None, source.name)}  # fmt: skip
    for action in spec.actions:
        eligibility = getattr(action, "eligibility", None)
        condition = getattr(eligibility, "attribute", None) if eligibility is not None else None
        if condition is not None:
            names.add(condition.name)
    return names


def allowed_attributes(con: Any, spec: ProjectSpec, source: AttributeSource) -> set[str]:
    """The attribute columns a live row of ``source`` may carry (see the module docstring); ``con``: the
    workspace database."""
    if source.attributes:
        return set(source.attributes)
    allowed = _read_attributes(spec, source)
    held = con.execute("SELECT DISTINCT attribute FROM attributes WHERE source = ?", [source.name]).fetchall()
    allowed.update(str(r[0]) for r in held)
    return allowed


def _instant(text: str, zone: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(zone))
    return parsed.astimezone(UTC)


def _micros(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def check_rows(
    rows: Sequence[Any], source: AttributeSource, allowed: set[str], now: datetime
) -> list[AttributeVersion]:
    """The rows as attribute versions (one per attribute column), or :class:`AttributeRowsError` naming every
    field at fault (``rows[3].plan``)."""
    if not rows:
        raise AttributeRowsError([{"field": "rows", "message": "the batch is empty"}])
    if len(rows) > MAX_ROWS:
        raise AttributeRowsError([{"field": "rows", "message": f"a batch holds at most {MAX_ROWS} rows"}])
    id_column = source.customer_id
    from_column = source.valid_from or "valid_from"
    accepted_at = _micros(now)
    problems: list[dict[str, Any]] = []
    versions: list[AttributeVersion] = []

    def problem(i: int, name: str, message: str) -> None:
        problems.append(
            {"index": i, "field": f"rows[{i}].{name}" if name else f"rows[{i}]", "message": message}
        )

    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            problem(i, "", f"a row is an object of column → value, got {type(row).__name__}")
            continue
        cid = row.get(id_column)
        if isinstance(cid, bool) or not isinstance(cid, str | int) or not str(cid).strip():
            problem(i, id_column, f"the customer id ({id_column!r}) is required: text or an integer")
            continue
        valid_from = accepted_at
        given_from = row.get(from_column)
        if given_from is not None:
            try:
                if not isinstance(given_from, str):
                    raise ValueError
                valid_from = _micros(_instant(given_from, source.timezone))
            except (ValueError, OverflowError):
                problem(i, from_column, f"an ISO 8601 time is expected, got {given_from!r}")
        attributes = [k for k in row if k not in (id_column, from_column)]
        if not attributes:
            problem(
                i, "", f"no attribute columns (this source takes: {', '.join(sorted(allowed)) or 'none'})"
            )
        for name in attributes:
            value = row[name]
            if name not in allowed:
                problem(i, name, f"not an attribute of source {source.name!r} (its attributes: "
                        f"{', '.join(sorted(allowed)) or 'none declared'})")  # fmt: skip
            elif isinstance(value, dict | list):
                problem(i, name, "a value is text, a number, a boolean or null")
            elif isinstance(value, float) and not math.isfinite(value):
                problem(i, name, "must be a finite number")
            elif isinstance(value, str) and len(value) > MAX_VALUE_LENGTH:
                problem(i, name, f"at most {MAX_VALUE_LENGTH} characters")
            else:
                versions.append(AttributeVersion(
                    str(cid).strip(), name, None if value is None else _as_text(value), valid_from,
                    accepted_at, source.name,
                ))  # fmt: skip
    if problems:
        raise AttributeRowsError(problems)
    return versions


def append_attributes(
    workspace: Workspace,
    rows: Sequence[Any],
    *,
    source_name: str | None = None,
    now: datetime | None = None,
    lock_timeout_s: float = 10.0,
) -> list[AttributeVersion]:
    """Check ``rows`` against the attribute source and append them (one transaction, under the workspace lock);
    returns the versions written. ``now`` is the time they are accepted (``available_at``; the default
    ``valid_from``): the server passes its clock (a ``clock: data`` project's data clock)."""
    source = attribute_source(workspace.spec, source_name)
    log = open_event_log(workspace)
    with workspace.write_lock(timeout_s=lock_timeout_s), log.connection() as con, transaction(con):
        allowed = allowed_attributes(con, workspace.spec, source)
        versions = check_rows(rows, source, allowed, now or datetime.now(UTC))
        _insert(con, log, source.name, versions)
    return versions


def _insert(con: Any, log: Any, source: str, versions: Sequence[AttributeVersion]) -> None:
    table = pa.table({
        "customer_id": [v.customer_id for v in versions],
        "attribute": [v.attribute for v in versions],
        "value": pa.array([v.value for v in versions], pa.string()),
        "valid_from": pa.array([v.valid_from for v in versions], pa.timestamp("us", tz="UTC")),
        "available_at": pa.array([v.available_at for v in versions], pa.timestamp("us", tz="UTC")),
    })  # fmt: skip
    con.register("live_attributes", table)
    con.execute(
        f"INSERT INTO {log.target('attributes')} SELECT customer_id, attribute, value, valid_from, "
        "available_at, ?, now() FROM live_attributes",
        [source],
    ).fetchall()
    con.unregister("live_attributes")
    log.commit(con)
