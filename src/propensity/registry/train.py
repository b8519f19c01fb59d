"""``train_project``: fit every action → a candidate bundle in the registry → the evaluation report, in one call.

This is what ``propensity train`` and ``propensity quickstart`` run. Fitting is
:func:`propensity.training.pipeline.fit_project`; this module writes its artifacts into an immutable bundle
(:func:`propensity.registry.bundle.write_bundle`), registers it as a candidate, and writes the report from the
bundle's manifest. It lives in the registry, above training, so that training never imports the registry.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from propensity.registry.bundle import read_manifest, write_bundle
from propensity.registry.registry import Registry
from propensity.training.fit import ActionResult
from propensity.training.pipeline import Progress, fit_project
from propensity.training.report import report_json, write_report_files
from propensity.workspace import Workspace


@dataclass
class TrainingResult:
    """What one training run produced: the bundle, per-action results, skipped actions, report paths."""

    bundle_id: str
    training_set: str
    results: dict[str, ActionResult]
    skipped: dict[str, str]
    oracle: dict[str, dict[str, Any]] = field(default_factory=dict)
    report_json: dict[str, Any] = field(default_factory=dict)
    report_paths: dict[str, Path] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def train_project(
    workspace: Workspace,
    *,
    actions: Sequence[str] | None = None,
    progress: Progress | None = None,
    write_report: bool = True,
) -> TrainingResult:
    """Train every action of the workspace's project (or the named ones) and register a candidate bundle.

    ``progress(stage, done, total)`` is called as work advances (stages: ``labels``, ``features``, ``train``).
    Raises :class:`~propensity.training.pipeline.NothingTrainedError` when no action could be trained.
    """
    t0 = time.perf_counter()
    fitted = fit_project(workspace, actions=actions, progress=progress)
    seconds = dict(fitted.seconds)
    t1 = time.perf_counter()
    bundle_id = write_bundle(workspace.state_dir / "models", fitted.artifacts, fitted.meta)
    Registry(workspace).register(bundle_id)
    seconds["bundle"] = seconds.pop("artifacts", 0.0) + time.perf_counter() - t1
    seconds.pop("fit_total", None)
    result = TrainingResult(
        bundle_id, fitted.training_set, fitted.results, fitted.skipped, fitted.oracle, seconds=seconds
    )
    if write_report:
        t2 = time.perf_counter()
        manifest = read_manifest(workspace.state_dir / "models" / bundle_id)
        result.report_paths = write_report_files(workspace.state_dir / "reports", manifest, result.skipped)
        result.report_json = report_json(manifest)
        seconds["report"] = time.perf_counter() - t2
    seconds["total"] = time.perf_counter() - t0
    return result
