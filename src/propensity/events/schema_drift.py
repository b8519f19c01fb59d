"""Source schema drift: each declared source's columns, compared with the last ones seen, at every ingest.

An ESP or a warehouse export changes its format without telling anyone: a column is renamed (``event_ts`` →
``event_time``), dropped, added, or starts carrying text where it carried numbers. Each ingest of a declared
source compares the file's columns with the source's last accepted schema (kept in
``.propensity/sources/<source>.schema.json``) and reports what changed: **new**, **missing**, **renamed** (a
missing and a new column of the same kind with similar names, or the only such pair) and **retyped** columns.

A column's *kind* is ``number``, ``timestamp``, ``bool``, ``text``, a nested type's name, or ``unknown`` (no
values seen: compatible with any kind). Text columns (every CSV column is read as text) are classified by a
sample of their values, so a CSV and a Parquet export of the same data have the same kinds.

The source's ``schema_drift`` policy says what happens next: ``accept`` (the default) ingests the file, reports
the changes and takes its columns as the new last-seen schema; ``quarantine`` puts every row of the file in the
quarantine (reason ``schema_drift``, the changes in the detail) and keeps the old schema, until the change is
accepted (``propensity ingest --accept-schema``).
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from propensity.workspace import Workspace

SAMPLE_ROWS = 1000
UNKNOWN = "unknown"
_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}([T ]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?\s*(Z|z|UTC|[+-]\d{2}(:?\d{2})?)?$"
_BOOLS = ["true", "false", "t", "f", "yes", "no"]


def _type_kind(dtype: pa.DataType) -> str | None:
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "number"
    if pa.types.is_timestamp(dtype) or pa.types.is_date(dtype):
        return "timestamp"
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_null(dtype):
        return UNKNOWN
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return None  # classified by its values
    if pa.types.is_struct(dtype) or pa.types.is_map(dtype):
        return "object"
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return "list"
    return str(dtype)


def _text_kind(values: pa.Array) -> str:
    text = pc.utf8_trim_whitespace(values.drop_null())
    text = text.filter(pc.not_equal(text, ""))
    if len(text) == 0:
        return UNKNOWN
    try:
        pc.cast(text, pa.float64())
        return "number"
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    if pc.all(pc.is_in(pc.utf8_lower(text), pa.array(_BOOLS))).as_py():
        return "bool"
    if pc.all(pc.match_substring_regex(text, _TIMESTAMP)).as_py():
        return "timestamp"
    return "text"


def observe(
    schema: pa.Schema, sample: pa.RecordBatch | pa.Table | None, *, skip: tuple[str, ...] = ()
) -> dict[str, str]:
    """Each column's kind (see the module docstring), from the schema and a sample of rows."""
    kinds: dict[str, str] = {}
    for f in schema:
        if f.name in skip:
            continue
        kind = _type_kind(f.type)
        if kind is None:
            if sample is None or f.name not in sample.schema.names:
                kind = UNKNOWN
            else:
                column = sample.column(f.name)
                if isinstance(column, pa.ChunkedArray):
                    column = column.combine_chunks()
                kind = _text_kind(column.slice(0, SAMPLE_ROWS).cast(pa.string()))
        kinds[f.name] = kind
    return kinds


@dataclass
class SchemaDrift:
    """How a file's columns differ from the source's last-seen schema."""

    new: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    renamed: list[tuple[str, str]] = field(default_factory=list)
    retyped: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.new or self.missing or self.renamed or self.retyped)

    def describe(self) -> str:
        parts = []
        if self.renamed:
            parts.append("renamed " + ", ".join(f"{a} → {b}" for a, b in self.renamed))
        if self.missing:
            parts.append("missing " + ", ".join(self.missing))
        if self.new:
            parts.append("new " + ", ".join(self.new))
        if self.retyped:
            parts.append("retyped " + ", ".join(f"{c} {a} → {b}" for c, a, b in self.retyped))
        return "; ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "new": self.new,
            "missing": self.missing,
            "renamed": [{"from": a, "to": b} for a, b in self.renamed],
            "retyped": [{"column": c, "from": a, "to": b} for c, a, b in self.retyped],
        }


def _compatible(a: str, b: str) -> bool:
    return a == b or UNKNOWN in (a, b)


def compare(previous: Mapping[str, str], current: Mapping[str, str]) -> SchemaDrift:
    """What changed from ``previous`` to ``current`` (both ``{column: kind}``)."""
    drift = SchemaDrift()
    gone = [c for c in previous if c not in current]
    added = [c for c in current if c not in previous]
    # Renames: the most similar (missing, new) pairs of compatible kinds; or the only missing and new columns.
    pairs = sorted(
        (
            (difflib.SequenceMatcher(None, m.lower(), n.lower()).ratio(), m, n)
            for m in gone
            for n in added
            if _compatible(previous[m], current[n])
        ),
        reverse=True,
    )
    lone = len(gone) == 1 and len(added) == 1
    for ratio, m, n in pairs:
        if m in gone and n in added and (ratio >= 0.5 or lone):
            drift.renamed.append((m, n))
            gone.remove(m)
            added.remove(n)
    drift.missing, drift.new = sorted(gone), sorted(added)
    drift.renamed.sort()
    drift.retyped = sorted(
        (c, previous[c], current[c])
        for c in current
        if c in previous and not _compatible(previous[c], current[c])
    )
    return drift


def _path(workspace: Workspace, source: str) -> Path:
    return workspace.state_dir / "sources" / f"{source}.schema.json"


def last_seen(workspace: Workspace, source: str) -> dict[str, str] | None:
    """The source's last accepted ``{column: kind}``, or None before its first ingest."""
    path = _path(workspace, source)
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return {str(k): str(v) for k, v in data["columns"].items()}


def remember(workspace: Workspace, source: str, columns: Mapping[str, str], *, file: str) -> None:
    """Take ``columns`` as the source's last-seen schema (written atomically). Unknown kinds keep the kind seen
    before, so a file where a column happens to be empty does not erase what is known about it."""
    before = last_seen(workspace, source) or {}
    merged = {c: (before.get(c, k) if k == UNKNOWN else k) for c, k in columns.items()}
    path = _path(workspace, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    record = {"source": source, "columns": merged, "file": file, "seen_at": datetime.now(UTC).isoformat()}
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
