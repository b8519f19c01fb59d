"""``fit_project``: training sets → models per action → each action's artifacts and the bundle's metadata.

:func:`propensity.registry.train.train_project` writes the result into a candidate bundle and its report (what
``propensity train`` and ``propensity quickstart`` run). Actions that cannot be trained (too little data, too
short a history) are skipped with their reason; the others still produce artifacts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from propensity.config.features import feature_set_version
from propensity.core.errors import PropensityError
from propensity.training.artifacts import ActionArtifacts
from propensity.training.dataset import build_training_sets, store_training_sets
from propensity.training.fit import ActionResult, fit_action
from propensity.training.oracle import compare_with_oracle, find_oracle
from propensity.training.trainers import ServedModel
from propensity.workspace import Workspace

Progress = Callable[[str, int, int], None]


class NothingTrainedError(PropensityError):
    """No action could be trained; the message lists why for each."""


@dataclass
class FittedProject:
    """What fitting a project produced: per-action artifacts (the bundle's files and manifest entries), the
    bundle's metadata, per-action results, skipped actions (with why) and timings."""

    training_set: str
    artifacts: dict[str, ActionArtifacts]
    meta: dict[str, Any]
    results: dict[str, ActionResult]
    skipped: dict[str, str]
    oracle: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def fit_project(
    workspace: Workspace,
    *,
    actions: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> FittedProject:
    """Fit every action of the workspace's project (or the named ones).

    ``progress(stage, done, total)`` is called as work advances (stages: ``labels``, ``features``, ``train``).
    Raises :class:`NothingTrainedError` when no action could be trained.
    """
    spec = workspace.spec
    if not spec.actions:
        raise NothingTrainedError(
            "the project declares no actions; add an `actions:` section to propensity.yaml"
        )
    if not spec.features:
        raise NothingTrainedError(
            "the project declares no features; add a `features:` section to propensity.yaml"
        )
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    skipped: dict[str, str] = {}
    sets = build_training_sets(workspace, actions=actions, progress=progress, errors=skipped)
    seconds["training_sets"] = time.perf_counter() - t0
    seconds.update({f"training_sets.{k}": v for k, v in sets.seconds.items()})
    t1 = time.perf_counter()
    store_training_sets(workspace, sets)
    seconds["store_training_sets"] = time.perf_counter() - t1
    results: dict[str, ActionResult] = {}
    names = sorted(sets.sets)
    t2 = time.perf_counter()
    for i, name in enumerate(names):
        if progress:
            progress("train", i, len(names))
        started = time.perf_counter()
        try:
            results[name] = fit_action(sets.sets[name], spec.training)
        except PropensityError as exc:
            skipped[name] = str(exc)
        seconds[f"fit.{name}"] = time.perf_counter() - started
    if progress:
        progress("train", len(names), len(names))
    seconds["fit"] = time.perf_counter() - t2
    if not results:
        reasons = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise NothingTrainedError(f"no action could be trained. {reasons}")
    oracle_path = find_oracle(spec)
    oracle: dict[str, dict[str, Any]] = {}
    if oracle_path is not None:
        for name, r in results.items():
            cmp = compare_with_oracle(oracle_path, name, sets.sets[name].split("test"), r.test_predictions)
            if cmp is not None:
                oracle[name] = cmp
    t3 = time.perf_counter()
    artifacts = {}
    for name, r in results.items():
        ts = sets.sets[name]
        served, evaluation = r.model.model, r.evaluation.model
        assert isinstance(served, ServedModel) and isinstance(evaluation, ServedModel)
        artifacts[name] = ActionArtifacts(
            encoder=r.encoder,
            model=served,
            calibrator=r.model.calibrator,
            baseline=r.baseline.model,  # type: ignore[arg-type]
            baseline_calibrator=r.baseline.calibrator,
            evaluation=(evaluation, r.evaluation.calibrator),
            info={
                "definition": ts.action.definition(),
                "feature_order": r.encoder.names,
                "model": {"kind": served.kind, "trees": served.num_trees, "weights": served.weights},
                "training_window": {
                    "first_cutoff": ts.cutoffs[0].isoformat(),
                    "last_cutoff": ts.cutoffs[-1].isoformat(),
                    **ts.boundaries.to_json(),
                },
                "counts": r.counts,
                "stages": r.stages,
                "calibration": r.calibration_choice,
                "champion": r.champion,
                "candidates": r.candidates,
                "search": r.search,
                "backtest": r.backtest,
                "warnings": r.warnings,
                "metrics": r.metrics,
                "oracle": oracle.get(name),
                "importance": r.importance,
                "reason_code_examples": r.reason_code_examples,
                # The served model's calibrated scores on the newest matured rows (the test split), as 101
                # quantiles: what serving and exports turn a score into a percentile and segment with.
                "score_quantiles": [
                    float(q) for q in np.quantile(r.test_predictions["served"], np.linspace(0.0, 1.0, 101))
                ],
            },
        )
    meta = {
        "project": spec.project,
        "feature_set_version": feature_set_version(spec.features),
        "features": [f.canonical() for f in spec.features],
        "training_set": sets.id,
        "data": sets.manifest["data"],
        "seed": spec.training.seed,
    }
    seconds["artifacts"] = time.perf_counter() - t3
    seconds["fit_total"] = time.perf_counter() - t0
    return FittedProject(sets.id, artifacts, meta, results, skipped, oracle, seconds=seconds)
