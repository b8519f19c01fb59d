"""The data contract of the canonical score row: a versioned file, row validation, and compatibility checks.

The contract is ``core/contracts/score_row.json`` in the package (its one source of truth): each field's
type, when it may be null, allowed values, range and meaning, plus the freshness rule. Every run is validated
against it before it is stored (:func:`validate_rows`). Released versions are kept at the repository root in
``contracts/released/``; :func:`check_compatibility` says what in a new version breaks readers of an old one
(a field removed or renamed, a type narrowed, a new required field, nulls no longer allowed, fewer allowed
values, a narrower range), which is only acceptable with a major version bump.

>>> contract = load_contract()
>>> contract.version, contract.fields["score"]["type"]
('2.0.0', 'float64')
>>> old = contract.raw
>>> new = {**old, "fields": {k: v for k, v in old["fields"].items() if k != "segment"}}
>>> check_compatibility(old, new)
['segment: removed (a breaking change; needs version 3.0.0, not 2.0.0)']
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from propensity.core.errors import PropensityError

CONTRACT_RESOURCE = "score_row.json"
TYPES = {
    "string": pa.string(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
# A type may change to a wider one without breaking readers.
WIDER: dict[str, set[str]] = {"bool": set(), "float64": set(), "string": set(), "timestamp": set()}
# Null rules from the strictest to the loosest: readers rely on a field never being null, so a move to a looser
# rule breaks them; a move to a stricter one breaks nobody.
NULL_RULES = ("never", "when_not_eligible", "allowed_when_eligible", "allowed")
JSON_SAMPLE = 1000  # JSON fields: every value is checked to look like JSON, this many are parsed


class ContractError(PropensityError):
    """Score rows that break the data contract; ``problems`` lists each broken rule."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"the score rows break the data contract ({len(self.problems)} problem(s)):\n{lines}"
        )


@dataclass(frozen=True)
class Contract:
    version: str
    fields: Mapping[str, Mapping[str, Any]]
    raw: Mapping[str, Any]

    @property
    def major(self) -> int:
        return _version(self.version)[0]


def _version(text: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)", str(text))
    if not m:
        raise ContractError([f"version: {text!r} is not a semantic version such as 1.0.0"])
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def parse_contract(data: Mapping[str, Any]) -> Contract:
    problems = []
    version = str(data.get("version", ""))
    _version(version)
    fields = data.get("fields")
    if not isinstance(fields, dict) or not fields:
        raise ContractError(["fields: the contract needs a mapping of field name -> rules"])
    for name, f in fields.items():
        if f.get("type") not in TYPES:
            problems.append(f"fields.{name}.type: {f.get('type')!r}; use one of {', '.join(TYPES)}")
        if f.get("nulls", "allowed") not in NULL_RULES:
            problems.append(f"fields.{name}.nulls: {f.get('nulls')!r}; use one of {', '.join(NULL_RULES)}")
        if not f.get("meaning"):
            problems.append(f"fields.{name}.meaning: every field says what it means")
    if problems:
        raise ContractError(problems)
    return Contract(version, fields, data)


def load_contract(path: Path | str | None = None) -> Contract:
    """The contract shipped with the package, or the one at ``path``."""
    if path is None:
        text = resources.files("propensity.core.contracts").joinpath(CONTRACT_RESOURCE).read_text("utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    return parse_contract(json.loads(text))


# --------------------------------------------------------------------------------------------- validation
def _examples(table: pa.Table, mask: Any, limit: int = 3) -> str:
    hit = table.filter(mask).slice(0, limit)
    pairs = (
        [
            f"{c}/{a}"
            for c, a in zip(
                hit.column("customer_id").to_pylist(), hit.column("action").to_pylist(), strict=True
            )
        ]
        if "action" in table.column_names and "customer_id" in table.column_names
        else []
    )
    return f" (e.g. {', '.join(pairs)})" if pairs else ""


def validate_rows(table: pa.Table, contract: Contract | None = None) -> list[str]:
    """Every way ``table`` breaks the contract (an empty list when it keeps it): missing or extra columns,
    types, nulls per rule, allowed values, ranges, patterns, JSON fields, and expiration after scoring."""
    contract = contract or load_contract()
    problems: list[str] = []
    missing = [f for f in contract.fields if f not in table.column_names]
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}")
    extra = [c for c in table.column_names if c not in contract.fields]
    if extra:
        problems.append(f"column(s) not in contract {contract.version}: {', '.join(extra)}")
    eligible = None
    if "eligible" in table.column_names and pa.types.is_boolean(table.column("eligible").type):
        eligible = table.column("eligible").fill_null(False)
    for name, rule in contract.fields.items():
        if name not in table.column_names:
            continue
        col = table.column(name)
        want = TYPES[rule["type"]]
        if not (
            col.type == want
            or (
                rule["type"] == "timestamp"
                and pa.types.is_timestamp(col.type)
                and col.type.tz in ("UTC", "+00:00")
            )
        ):
            problems.append(f"{name}: type {col.type}, the contract says {rule['type']} ({want})")
            continue
        nulls = rule.get("nulls", "allowed")
        is_null = pc.is_null(col, nan_is_null=True) if pa.types.is_floating(col.type) else pc.is_null(col)
        if nulls == "never" and col.null_count:
            problems.append(
                f"{name}: {col.null_count} null value(s); it is never null{_examples(table, is_null)}"
            )
        if nulls in ("when_not_eligible", "allowed_when_eligible") and eligible is not None:
            bad = pc.and_(pc.invert(eligible), pc.invert(is_null))
            k = pc.sum(bad).as_py() or 0
            if k:
                problems.append(
                    f"{name}: {k} row(s) with eligible = false carry a value; it must be null{_examples(table, bad)}"
                )
            if nulls == "when_not_eligible":
                bad = pc.and_(eligible, is_null)
                k = pc.sum(bad).as_py() or 0
                if k:
                    problems.append(
                        f"{name}: {k} eligible row(s) are null; it is set on every eligible row{_examples(table, bad)}"
                    )
        valid = col.drop_null()
        if "allowed" in rule:
            bad_mask = pc.invert(pc.is_in(col, pa.array(rule["allowed"], want)))
            bad_mask = pc.and_(bad_mask, pc.is_valid(col))
            k = pc.sum(bad_mask).as_py() or 0
            if k:
                seen = sorted(set(table.filter(bad_mask).column(name).to_pylist()))[:5]
                problems.append(f"{name}: {k} value(s) not allowed ({seen}); allowed: {rule['allowed']}")
        if "minimum" in rule or "maximum" in rule:
            lo, hi = rule.get("minimum", -np.inf), rule.get("maximum", np.inf)
            bad_mask = pc.fill_null(
                pc.invert(pc.and_(pc.greater_equal(col, lo), pc.less_equal(col, hi))), False
            )
            bad_mask = pc.and_(bad_mask, pc.invert(is_null))
            k = pc.sum(bad_mask).as_py() or 0
            if k:
                problems.append(f"{name}: {k} value(s) outside [{lo}, {hi}]{_examples(table, bad_mask)}")
        if "pattern" in rule and len(valid):
            ok = pc.match_substring_regex(valid, rule["pattern"])
            k = len(valid) - (pc.sum(ok).as_py() or 0)
            if k:
                seen = sorted(set(valid.filter(pc.invert(ok)).to_pylist()))[:5]
                problems.append(f"{name}: {k} value(s) do not match {rule['pattern']} ({seen})")
        if rule.get("format") == "json" and len(valid):
            problems.extend(_check_json(name, valid))
    if not problems and {"scored_at", "expiration_at"} <= set(table.column_names) and table.num_rows:
        bad = pc.less_equal(table.column("expiration_at"), table.column("scored_at"))
        k = pc.sum(bad).as_py() or 0
        if k:
            problems.append(f"expiration_at: {k} row(s) expire at or before scored_at{_examples(table, bad)}")
    return problems


def _check_json(name: str, valid: pa.ChunkedArray) -> list[str]:
    looks = pc.or_(
        pc.and_(pc.starts_with(valid, "["), pc.ends_with(valid, "]")),
        pc.and_(pc.starts_with(valid, "{"), pc.ends_with(valid, "}")),
    )
    k = len(valid) - (pc.sum(looks).as_py() or 0)
    if k:
        return [f"{name}: {k} value(s) are not JSON arrays or objects"]
    step = max(1, len(valid) // JSON_SAMPLE)
    for v in valid.to_pylist()[::step]:
        try:
            json.loads(v)
        except ValueError:
            return [f"{name}: value {v[:60]!r} is not valid JSON"]
    return []


# ---------------------------------------------------------------------------------------- compatibility
def _loosening(old: Mapping[str, Any], new: Mapping[str, Any]) -> str | None:
    o, n = NULL_RULES.index(old.get("nulls", "allowed")), NULL_RULES.index(new.get("nulls", "allowed"))
    if n > o:
        return f"nulls loosened from {old.get('nulls', 'allowed')!r} to {new.get('nulls', 'allowed')!r}"
    return None


def breaking_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What in ``new`` (a contract mapping) breaks a reader written for ``old``, regardless of versions.

    A reader of the score table reads each field by name, relies on its type, on its null rule and on the
    values and range it was promised; new optional fields are safe. A field that changes meaning-critical
    promises in the reader's favour (fewer nulls, more narrowly typed in the reader's favour) is safe.
    """
    out = []
    of, nf = old["fields"], new["fields"]
    removed = [f for f in of if f not in nf]
    added = [f for f in nf if f not in of]
    for f in removed:
        same_type = [a for a in added if nf[a].get("type") == of[f].get("type")]
        hint = f" (renamed to {' or '.join(same_type)}?)" if same_type else ""
        out.append(f"{f}: removed{hint}")
    for f in added:
        if nf[f].get("nulls", "allowed") == "never":
            out.append(f"{f}: new field that is never null (older writers cannot fill it); make it nullable")
    for f in of:
        if f not in nf:
            continue
        o, n = of[f], nf[f]
        if o.get("type") != n.get("type") and n.get("type") not in WIDER.get(o.get("type", ""), set()):
            out.append(f"{f}: type changed from {o.get('type')} to {n.get('type')}")
        # A reader relies on the stricter null rule; a writer of the new version may now emit nulls.
        loose = _loosening(o, n)
        if loose:
            out.append(f"{f}: {loose}")
        if "allowed" in n:
            if "allowed" not in o:
                out.append(f"{f}: allowed values introduced ({n['allowed']}); any value was allowed before")
            else:
                gone = [v for v in o["allowed"] if v not in n["allowed"]]
                if gone:
                    out.append(f"{f}: allowed values removed: {gone}")
        for bound, tighter in (("minimum", lambda a, b: b > a), ("maximum", lambda a, b: b < a)):
            if bound in n and (bound not in o or tighter(o[bound], n[bound])):
                out.append(f"{f}: {bound} narrowed from {o.get(bound, 'none')} to {n[bound]}")
        if o.get("format") != n.get("format"):
            out.append(f"{f}: format changed from {o.get('format')} to {n.get('format')}")
        if o.get("pattern") != n.get("pattern") and "pattern" in n:
            out.append(f"{f}: pattern changed (check that every old value still matches)")
    return out


def check_compatibility(old: Mapping[str, Any] | Contract, new: Mapping[str, Any] | Contract) -> list[str]:
    """Problems with releasing ``new`` after ``old``: breaking changes without a major version bump, a version
    that goes backwards, or a changed contract that kept its version. Empty when the release is fine."""
    o = old.raw if isinstance(old, Contract) else old
    n = new.raw if isinstance(new, Contract) else new
    ov, nv = _version(str(o.get("version"))), _version(str(n.get("version")))
    if nv < ov:
        return [f"version: {n.get('version')} is older than the released {o.get('version')}"]
    breaking = breaking_changes(o, n)
    if breaking and nv[0] == ov[0]:
        need = f"{ov[0] + 1}.0.0"
        return [f"{b} (a breaking change; needs version {need}, not {n.get('version')})" for b in breaking]
    if nv == ov and _canonical(o) != _canonical(n):
        bump = f"{ov[0]}.{ov[1] + 1}.0"
        return [
            f"version: the contract changed but kept version {n.get('version')}; release it as {bump} or later"
        ]
    return []


def _canonical(data: Mapping[str, Any]) -> str:
    return json.dumps(copy.deepcopy(dict(data)), sort_keys=True)
