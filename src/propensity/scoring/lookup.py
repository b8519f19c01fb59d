"""One customer as the console's lookup page shows them: their scores in the latest complete scoring run (with
reason codes, segment, next best action and the rule that decided it), their current attributes and recent
events.

Identifiers are masked unless the caller may see them (``reveal``): the customer id, the attributes a
destination uses as identifiers (``identifiers:`` of audiences) and any attribute or event property whose name
says it holds one (email, phone, name, address, postcode, IP, birth date), with
:func:`propensity.core.masking.mask`.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import pyarrow.compute as pc

from propensity.config.spec import ProjectSpec
from propensity.core.masking import mask
from propensity.events.log import open_event_log
from propensity.scoring.reading import latest, run_rows, store_runs
from propensity.workspace import Workspace

RECENT_EVENTS = 25
_IDENTIFYING = re.compile(
    r"(e-?mail|phone|mobile|name|address|street|post_?code|zip|ip_?addr|^ip$|birth)", re.I
)
_EVENT_FIELDS = (
    "event_time",
    "event_type",
    "source",
    "amount",
    "quantity",
    "sku",
    "category",
    "campaign_id",
    "channel",
)


def identifying_names(spec: ProjectSpec) -> set[str]:
    """Attribute and property names treated as identifiers (see the module docstring)."""
    names = set()
    for d in spec.destinations:
        ids = getattr(d, "identifiers", None)
        if ids is not None:
            names |= {v for v in (ids.email, ids.phone) if v}
    return names


def _is_identifier(name: str, declared: set[str]) -> bool:
    return name in declared or bool(_IDENTIFYING.search(name))


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    return v


def _properties(raw: Any, reveal: bool, declared: set[str]) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except (TypeError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    return {
        k: (v if reveal or not _is_identifier(k, declared) or v is None else mask(v)) for k, v in data.items()
    }


def customer_view(workspace: Workspace, customer_id: str, *, reveal: bool = False) -> dict[str, Any]:
    """The lookup page's numbers for ``customer_id`` (``found`` false when no run or event knows them)."""
    from propensity.scoring.score_store import open_score_store

    spec = workspace.spec
    declared = identifying_names(spec)
    shown_id = customer_id if reveal else mask(customer_id)
    store = open_score_store(workspace)
    run = latest(store_runs(workspace, store))
    scores: list[dict[str, Any]] = []
    if run is not None:
        rows = run_rows(store, run.run_id)
        mine = rows.filter(pc.equal(rows.column("customer_id"), customer_id)).to_pylist()
        for r in sorted(mine, key=lambda r: r["action"]):
            codes = r.get("reason_codes")
            try:
                codes = json.loads(codes) if isinstance(codes, str) else codes
            except ValueError:
                codes = None
            scores.append(
                {
                    "action": r["action"],
                    "score": r["score"],
                    "percentile": r["percentile"],
                    "segment": r["segment"],
                    "eligible": r["eligible"],
                    "next_best_action": r["next_best_action"],
                    "decision_policy": r["decision_policy"],
                    "holdout_group": r["holdout_group"],
                    "reason_codes": codes,
                    "model_version": r["model_version"],
                }
            )
    with open_event_log(workspace).connection(read_only=True) as con:
        cols = {r[0] for r in con.execute("DESCRIBE events").fetchall()}
        fields = [f for f in _EVENT_FIELDS if f in cols] + (["properties"] if "properties" in cols else [])
        recent = con.execute(
            f"SELECT {', '.join(fields)} FROM events WHERE customer_id = ? ORDER BY event_time DESC LIMIT ?",
            [customer_id, RECENT_EVENTS],
        ).fetchall()
        count = con.execute("SELECT count(*) FROM events WHERE customer_id = ?", [customer_id]).fetchall()[0][
            0
        ]
        attrs: list[tuple[Any, ...]] = []
        has_attrs = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'attributes'"
        ).fetchall()[0][0]
        if has_attrs:
            attrs = con.execute(
                "SELECT attribute, arg_max(value, valid_from), max(valid_from) FROM attributes "
                "WHERE customer_id = ? GROUP BY attribute ORDER BY attribute",
                [customer_id],
            ).fetchall()
    events = []
    for row in recent:
        e = {k: _jsonable(v) for k, v in zip(fields, row, strict=True) if k != "properties"}
        if "properties" in fields:
            e["properties"] = _properties(row[fields.index("properties")], reveal, declared)
        events.append(e)
    attributes = [
        {
            "attribute": a,
            "value": None if v is None else (v if reveal or not _is_identifier(a, declared) else mask(v)),
            "masked": not reveal and v is not None and _is_identifier(a, declared),
            "valid_from": _jsonable(t),
        }
        for a, v, t in attrs
    ]
    return {
        "customer": shown_id,
        "masked": not reveal,
        "found": bool(scores or count or attributes),
        "run": None
        if run is None
        else {
            "run_id": run.run_id,
            "scored_at": run.scored_at.isoformat(),
            "as_of": run.as_of.isoformat(),
        },
        "scores": scores,
        "events": events,
        "event_count": int(count),
        "attributes": attributes,
    }
