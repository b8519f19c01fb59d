"""Targeting: what sending an action to the customers above a score would reach, cost and earn.

From the latest complete scoring run, an action's eligible customers outside the control group (the holdout is
kept out: it is never activated) are sorted by calibrated score. For every distinct score ``s`` (at most
:data:`MAX_POINTS` of them, evenly spaced in rank beyond that) the curve holds the number of customers scored at
least ``s`` (``reached``) and the sum of their probabilities (``expected``: the expected conversions, which the
probabilities being calibrated is what makes meaningful). With a cost per contact ``c`` and a value per
conversion ``v``, a point's expected profit is ``v · expected − c · reached``; it is largest at the lowest
score still above ``c / v`` (each extra customer adds ``v · p − c``), and :func:`profit` finds it on the curve.

Beside the expectation, :func:`realised_by_bucket` shows what happened: the latest complete run whose outcome
window has closed, its eligible rows cut into ten equal buckets by score, each bucket's mean score and realised
outcome rate (with the action's label definition, :mod:`propensity.experiments.outcomes`). When no run has
matured yet, the production bundle's test split (the newest matured window at training) stands in, and says so.

>>> curve = targeting_curve([0.5, 0.2, 0.2, 0.1])
>>> curve["threshold"], curve["reached"], [round(e, 2) for e in curve["expected"]]
([0.5, 0.2, 0.1], [1, 3, 4], [0.5, 0.9, 1.0])
>>> profit(curve, cost=0.15, value=1.0)["best"]
{'index': 1, 'threshold': 0.2, 'reached': 3, 'expected': 0.9, 'cost': 0.45, 'value': 0.9, 'profit': 0.45}
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow.compute as pc

from propensity.activation.targets import reachable
from propensity.core.errors import PropensityError
from propensity.events.log import open_event_log
from propensity.experiments.outcomes import data_end, outcomes
from propensity.scoring.reading import latest, memo, run_rows, store_runs
from propensity.workspace import Workspace

MAX_POINTS = 2000
BUCKETS = 10


class NoRunError(PropensityError):
    """No complete scoring run to target from."""


def targeting_curve(scores: Sequence[float] | np.ndarray) -> dict[str, list[Any]]:
    """Reached customers and expected conversions at each distinct score, from the highest score down."""
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    if s.size == 0:
        return {"threshold": [], "reached": [], "expected": []}
    cum = np.cumsum(s)
    # The last position of each distinct score: everyone tied with it is reached together.
    last = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    if last.size > MAX_POINTS:
        last = last[np.unique(np.linspace(0, last.size - 1, MAX_POINTS).round().astype(np.int64))]
    return {
        "threshold": [float(x) for x in s[last]],
        "reached": [int(i) + 1 for i in last],
        "expected": [float(x) for x in cum[last]],
    }


def profit(curve: dict[str, list[Any]], *, cost: float, value: float) -> dict[str, Any]:
    """Expected cost, value and profit at every point of ``curve``, and the point of highest profit (None
    when reaching no one is best)."""
    reached = np.asarray(curve["reached"], dtype=np.float64)
    expected = np.asarray(curve["expected"], dtype=np.float64)
    costs = reached * cost
    values = expected * value
    gains = values - costs
    best = None
    if gains.size and gains.max() > 0:
        i = int(np.argmax(gains))  # the first (highest threshold) of equal maxima: fewest contacts
        best = {
            "index": i,
            "threshold": curve["threshold"][i],
            "reached": int(reached[i]),
            "expected": round(float(expected[i]), 6),
            "cost": round(float(costs[i]), 6),
            "value": round(float(values[i]), 6),
            "profit": round(float(gains[i]), 6),
        }
    return {"cost": costs.tolist(), "value": values.tolist(), "profit": gains.tolist(), "best": best}


_realised_cache: dict[tuple[str, str, str], dict[str, Any] | None] = {}
_cache_lock = threading.Lock()


def _matured_run(workspace: Workspace, runs: list[Any], action: str, end: Any) -> Any:
    spec_action = workspace.spec.action(action)
    span = spec_action.gap.timedelta + spec_action.horizon.timedelta + spec_action.label_delay.timedelta
    for run in runs:  # newest first
        if run.status == "complete" and end is not None and run.as_of + span <= end:
            return run
    return None


def _data_end(workspace: Workspace) -> Any:
    with open_event_log(workspace).connection(read_only=True) as con:
        return data_end(con, workspace.spec)


def realised_by_bucket(
    workspace: Workspace, store: Any, action: str, runs: list[Any] | None = None
) -> dict[str, Any] | None:
    """Realised outcome rate per score bucket on the latest matured run (see the module docstring); None when
    no run has matured."""
    end = memo(workspace, "data-end", lambda: _data_end(workspace))
    run = _matured_run(workspace, store_runs(workspace, store) if runs is None else runs, action, end)
    if run is None:
        return None
    key = (run.run_id, action, str(end))
    with _cache_lock:
        if key in _realised_cache:
            return _realised_cache[key]
    with open_event_log(workspace).connection(read_only=True) as con:
        rows = run_rows(store, run.run_id)
        rows = rows.filter(pc.equal(rows.column("action"), action))  # rows carry their as_of (contract 2.0)
        matured = outcomes(con, workspace.spec, rows, end=end)
    score = matured.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    y = matured.column("outcome").to_numpy(zero_copy_only=False).astype(np.float64)
    result = None
    if score.size:
        order = np.argsort(-score, kind="stable")
        buckets = []
        for k, part in enumerate(np.array_split(order, min(BUCKETS, score.size)), start=1):
            if part.size:
                buckets.append(
                    {
                        "bucket": k,
                        "n": int(part.size),
                        "min_score": float(score[part].min()),
                        "max_score": float(score[part].max()),
                        "mean_score": float(score[part].mean()),
                        "realised_rate": float(y[part].mean()),
                    }
                )
        result = {
            "source": "scoring run",
            "run_id": run.run_id,
            "as_of": run.as_of.isoformat(),
            "rows": int(score.size),
            "buckets": buckets,
            "note": f"eligible customers scored in run {run.run_id} (as of {run.as_of:%Y-%m-%d %H:%M} "
            "UTC), whose outcome window has closed, in ten equal buckets by score",
        }
    with _cache_lock:
        _realised_cache[key] = result
    return result


def _from_bundle(workspace: Workspace, model_version: str, action: str) -> dict[str, Any] | None:
    from propensity.registry.bundle import read_manifest
    from propensity.registry.registry import Registry

    try:
        info = read_manifest(Registry(workspace).path(model_version)).to_json()["actions"][action]
    except (PropensityError, KeyError):
        return None
    deciles = info.get("metrics", {}).get("model", {}).get("deciles") or []
    if not deciles:
        return None
    return {
        "source": "bundle test split",
        "run_id": None,
        "as_of": info.get("training_window", {}).get("test_start"),
        "rows": int(sum(d["n"] for d in deciles)),
        "buckets": [
            {
                "bucket": d["decile"],
                "n": d["n"],
                "min_score": d["min_score"],
                "max_score": None,
                "mean_score": d["mean_score"],
                "realised_rate": d["realised_rate"],
            }
            for d in deciles
        ],
        "note": "no scoring run has matured yet: the bundle's test split (the newest matured window at "
        "training) in ten equal buckets by score; score as of an earlier date to see a run's own",
    }


def targeting_view(
    workspace: Workspace, action: str | None = None, *, run_id: str | None = None
) -> dict[str, Any]:
    """Everything the targeting page shows for one action (default: the run's first) of the latest complete
    run (or ``run_id``)."""
    from propensity.scoring.score_store import open_score_store

    store = open_score_store(workspace)
    runs = store_runs(workspace, store)
    run = next((r for r in runs if r.run_id == run_id), None) if run_id else latest(runs)
    if run is None:
        raise NoRunError("there is no complete scoring run yet; run `propensity score` first")
    rows = run_rows(store, run.run_id)
    actions = sorted(set(rows.column("action").to_pylist()))
    if not actions:
        raise NoRunError(f"scoring run {run.run_id} has no rows")
    action = action or actions[0]
    if action not in actions:
        raise NoRunError(f"run {run.run_id} has no scores for {action!r}; it has: {', '.join(actions)}")
    mine = rows.filter(pc.equal(rows.column("action"), action))
    eligible = mine.filter(pc.fill_null(mine.column("eligible"), False))
    pool = reachable(mine, action)
    scores = pool.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    holdout = workspace.spec.experiments.holdout_for(action)
    policy = workspace.spec.policies.for_action(action)
    try:
        realised = realised_by_bucket(workspace, store, action, runs)
    except PropensityError:
        realised = None
    if realised is None:
        realised = _from_bundle(workspace, run.model_version, action)
    meaning = (run.details.get("meanings") or {}).get(action)
    return {
        "run": {
            "run_id": run.run_id,
            "scored_at": run.scored_at.isoformat(),
            "as_of": run.as_of.isoformat(),
            "model_version": run.model_version,
        },
        "actions": actions,
        "action": action,
        "meaning": meaning,
        "customers": mine.num_rows,
        "eligible": eligible.num_rows,
        "control": eligible.num_rows - pool.num_rows,
        "holdout": None
        if holdout is None
        else {"experiment": holdout.name, "control_share": holdout.control_share},
        "pool": pool.num_rows,
        "curve": targeting_curve(scores),
        "realised": realised,
        "policy": {
            "threshold": policy.threshold,
            "value": policy.value,
            "cost": policy.cost,
            "channel": policy.channel,
        },
        "targets": [t.model_dump(exclude_none=True) for t in workspace.spec.targets if t.action == action],
        "destinations": [
            {"name": d.name, "type": d.type, "target": d.target} for d in workspace.spec.destinations
        ],
    }
