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
from propensity.registry.table_samples import LABEL, keep_sample, training_sample_path
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


# ------------------------------------------------------------------------------------------- labelled tables
@dataclass
class TableTrainingResult:
    """A labelled table trained into a candidate bundle (one action named as the table)."""

    bundle_id: str
    name: str
    fit: Any  # propensity.training.tables.TableFit
    report_json: dict[str, Any] = field(default_factory=dict)
    report_paths: dict[str, Path] = field(default_factory=dict)
    predictions_path: Path | None = None

    def summary(self) -> dict[str, Any]:
        """What ``propensity train --table --json`` prints: the bundle id, rows used and rejected, the
        evaluation's headline figures."""
        lt = self.fit.table
        model, baseline = self.fit.metrics["model"], self.fit.metrics["baseline"]
        keys = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "ece_ci", "base_rate", "n")
        return {
            "bundle": self.bundle_id,
            "table": self.name,
            "split": self.fit.split,
            "input_rows": lt.input_rows,
            "rows_used": lt.table.num_rows,
            "rejected": lt.rejected,
            "notes": lt.notes,
            "features": lt.feature_names,
            "model": {k: model[k] for k in keys},
            "baseline": {k: baseline[k] for k in keys},
            "predictions": str(self.predictions_path) if self.predictions_path else None,
            "report": str(self.report_paths.get("html", "")),
        }


def train_table(
    workspace: Workspace,
    data: Any = None,
    *,
    name: str | None = None,
    id_column: str | None = None,
    label: str | None = None,
    positive: str | None = None,
    time_column: str | None = None,
    features: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    folds: int | None = None,
    write_report: bool = True,
) -> TableTrainingResult:
    """Train a labelled table into a candidate bundle: a ``tables:`` entry of the spec named ``name`` (``data``
    None), or ``data`` (a file path or any table) with the columns given here. The evaluation's out-of-fold (or
    test) predictions are kept next to the report (``predictions-<bundle>.parquet``)."""
    import pyarrow.parquet as pq

    from propensity.core.hashing import content_hash
    from propensity.events.tables import read_table_file
    from propensity.training.artifacts import ActionArtifacts
    from propensity.training.tables import LabelledTableError, fit_table, read_labelled
    from propensity.training.trainers import ServedModel

    spec = workspace.spec
    declared = spec.table(name) if data is None and name is not None else None
    if declared is not None:
        if declared.sql is not None:
            from propensity.events.warehouse import read_query

            data = read_query(declared.sql, what=f"table {declared.name}")
        else:
            data = spec.resolve(declared.path)
        id_column = id_column or declared.id
        label = label or declared.label
        positive = positive or declared.positive
        time_column = time_column or declared.time
        features = features if features is not None else declared.features
        exclude = [*exclude, *declared.exclude]
        folds = folds or declared.folds
    if data is None:
        raise LabelledTableError("give a table (a file or a frame) or the name of a `tables:` entry")
    if label is None:
        raise LabelledTableError("give the label column (--label)")
    source = str(data) if isinstance(data, str | Path) else None
    if declared is not None and declared.sql is not None:
        source = f"sql (environment variable {declared.sql.url_env})"
    if name is None:
        stem = Path(source).name.split(".")[0] if source else "table"
        name = "".join(c if c.isalnum() else "_" for c in stem.lower()).strip("_") or "table"
        if not name[0].isalpha():
            name = f"t_{name}"
    table = read_table_file(data) if isinstance(data, str | Path) else data
    lt = read_labelled(table, name=name, id_column=id_column, label=label, positive=positive,
                       time_column=time_column, features=list(features) if features is not None else None,
                       exclude=list(exclude))  # fmt: skip
    fit = fit_table(lt, spec.training, folds=folds or 5)
    f = fit.final
    definition = {"kind": "table", "name": name, "label": label, "positive": lt.positive, "id": id_column,
                  "time": time_column, "source": source}  # fmt: skip
    info = {
        "definition": definition,
        "feature_order": f.encoder.names,
        "training_window": {"split": fit.split},
        "counts": fit.counts,
        "rows": {"input_rows": lt.input_rows, "rows_used": lt.table.num_rows, "rejected": lt.rejected},
        "calibration": f.calibration_choice,
        "metrics": fit.metrics,
        "importance": fit.importance,
        "reason_code_examples": [],
        "score_quantiles": fit.score_quantiles,
        "notes": lt.notes,
    }
    schema = [{"name": n, "type": str(lt.table.schema.field(n).type)} for n in lt.feature_names]
    served = ServedModel("lightgbm", lightgbm=f.booster)
    info["model"] = served.spec()
    art = ActionArtifacts(f.encoder, served, f.calibrator, f.baseline, f.baseline_calibrator, info)
    meta: dict[str, Any] = {
        "project": spec.project,
        "feature_set_version": "ts-" + content_hash(schema),
        "features": [],
        "table": {"name": name, "features": schema},
        "training_set": None,
        "data": {"rows": lt.input_rows, "source": source},
        "seed": spec.training.seed,
    }
    bundle = write_bundle(workspace.state_dir / "models", {name: art}, meta)
    Registry(workspace).register(bundle)
    result = TableTrainingResult(bundle, name, fit)
    # Feature drift's reference for this bundle (its rows live only in the user's file).
    reference = lt.table.select(lt.feature_names).append_column(LABEL, lt.table.column("label"))
    keep_sample(reference, training_sample_path(workspace, bundle), seed=spec.training.seed)
    folder = workspace.state_dir / "reports"
    folder.mkdir(parents=True, exist_ok=True)
    result.predictions_path = folder / f"predictions-{bundle}.parquet"
    pq.write_table(fit.predictions, result.predictions_path)
    if write_report:
        manifest = read_manifest(workspace.state_dir / "models" / bundle)
        result.report_paths = write_report_files(folder, manifest, None)
        result.report_json = report_json(manifest)
    return result
