"""Named targets: who one action is sent to, chosen on the console's targeting page, kept in ``propensity.yaml``.

A target (``targets:``, :class:`~propensity.config.decisions.TargetSettings`) names an action and a rule, a score
threshold or a top share. :func:`select_target` applies it to a run's rows: the action's eligible rows, without
the control group, at or above the threshold (or within the top share of those rows by score; ties at the cut
are all in). A destination with ``target: <name>`` publishes only those rows (:func:`propensity.activation.run.activate`).

:func:`save_target` writes a target into the project file, keeping the file's comments, validated by the same
models as the YAML (nothing is written when it would not load), under the workspace lock, and can attach it to
destinations and copy its threshold and economics into the action's decision policy.

>>> import pyarrow as pa
>>> from propensity.config.decisions import TargetSettings
>>> rows = pa.table({"customer_id": ["a", "b", "c", "d"], "action": ["buy_7d"] * 4,
...                  "score": [0.9, 0.4, 0.2, None], "eligible": [True, True, True, False],
...                  "holdout_group": ["treatment", "control", "treatment", None]})
>>> t = TargetSettings(name="t", action="buy_7d", threshold=0.3)
>>> select_target(rows, t).column("customer_id").to_pylist()
['a']
>>> select_target(rows, TargetSettings(name="t", action="buy_7d", top_share=1.0)).column("customer_id").to_pylist()
['a', 'c']
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from propensity.config.decisions import TargetSettings
from propensity.config.edit import edit_spec_text, plain
from propensity.config.spec import SPEC_FILENAME, ProjectSpec
from propensity.core.errors import PropensityError
from propensity.workspace import Workspace


class TargetError(PropensityError):
    """A target that cannot be saved (unknown destination, ...)."""


def reachable(rows: pa.Table, action: str) -> pa.Table:
    """The rows a target of ``action`` chooses from: eligible, scored, not in a control group."""
    rows = rows.filter(pc.equal(rows.column("action"), action))
    keep = pc.and_(pc.fill_null(rows.column("eligible"), False), pc.is_valid(rows.column("score")))
    control = pc.fill_null(pc.equal(rows.column("holdout_group").cast(pa.string()), "control"), False)
    return rows.filter(pc.and_(keep, pc.invert(control)))


def top_share_cut(scores: np.ndarray, share: float) -> float:
    """The lowest score inside the top ``share`` of ``scores`` (everyone tied with it is in too)."""
    if scores.size == 0:
        return math.inf
    k = max(1, math.ceil(share * scores.size - 1e-9))
    return float(np.sort(scores)[::-1][min(k, scores.size) - 1])


def select_target(rows: pa.Table, target: TargetSettings) -> pa.Table:
    """The rows of ``rows`` that ``target`` selects (see the module docstring)."""
    pool = reachable(rows, target.action)
    scores = pool.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    if target.threshold is not None:
        cut = target.threshold
    else:
        assert target.top_share is not None
        cut = top_share_cut(scores, target.top_share)
    return pool.filter(pa.array(scores >= cut - 1e-12))


def save_target(
    workspace: Workspace,
    target: TargetSettings,
    *,
    destinations: Sequence[str] = (),
    as_policy: bool = False,
    cut: float | None = None,
    by: str | None = None,
) -> ProjectSpec:
    """Write ``target`` into ``propensity.yaml`` (replacing one of the same name), point ``destinations`` at it,
    and with ``as_policy`` make its threshold and economics the action's decision policy
    (``policies.actions.<action>``: threshold, value, cost; its channel is kept; a top-share target's threshold is
    ``cut``, the score at its cut when it was chosen). Returns the new spec."""
    saved = target.model_copy(
        update={"saved_by": by, "saved_at": datetime.now(UTC).isoformat(timespec="seconds")}
    )
    entry = plain(saved.model_dump(exclude_none=True))
    # A threshold is a score of the run and is written exactly: shortened (plain keeps six digits), it could
    # land above the last customer the page showed as reached, and activate would leave that customer out.
    if saved.threshold is not None:
        entry["threshold"] = saved.threshold
    path = workspace.root / SPEC_FILENAME
    known = {d.name for d in workspace.spec.destinations}
    unknown = sorted(set(destinations) - known)
    if unknown:
        raise TargetError(
            f"no destination named {', '.join(unknown)}; known: {', '.join(sorted(known)) or '(none)'}"
        )

    def mutate(data: Any) -> None:
        targets = data.get("targets")
        if targets is None:
            data["targets"] = targets = []
        for i, existing in enumerate(list(targets)):
            if isinstance(existing, dict) and existing.get("name") == saved.name:
                targets[i] = entry
                break
        else:
            targets.append(entry)
        for d in data.get("destinations") or []:
            if isinstance(d, dict) and d.get("name") in destinations:
                d["target"] = saved.name
        if as_policy:
            policies = data.get("policies")
            if policies is None:
                data["policies"] = policies = {}
            actions = policies.get("actions")
            if actions is None:
                policies["actions"] = actions = {}
            current = dict(actions.get(saved.action) or {})
            threshold = saved.threshold if saved.threshold is not None else cut
            current.update(
                plain({"value": saved.value_per_conversion, "cost": saved.cost_per_contact}),
                threshold=min(1.0, threshold or 0.0),  # exact, as the target's
            )
            actions[saved.action] = current

    with workspace.write_lock():
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        new_text, spec = edit_spec_text(text, mutate, root=workspace.root, source=str(path))
        tmp = path.with_name(f".{SPEC_FILENAME}.{os.getpid()}.tmp")
        tmp.write_text(new_text, encoding="utf-8")
        os.replace(tmp, path)
    return spec


def target_named(spec: ProjectSpec, name: str) -> TargetSettings:
    for t in spec.targets:
        if t.name == name:
            return t
    raise TargetError(
        f"no target named {name!r}; known: {', '.join(t.name for t in spec.targets) or '(none)'}"
    )
