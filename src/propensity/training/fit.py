"""Fit one action: baseline and LightGBM on train, calibrate on calibration, evaluate on test.

The time split is verified again here (no model is fitted on a leaky split) and an action with too few
positives or negatives is refused with its counts. The result holds everything a bundle stores for the action
and everything the report shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from propensity.config.training import TrainingSettings
from propensity.training.calibration import Calibrator, choose_calibrator
from propensity.training.dataset import TrainingSet
from propensity.training.encoding import FeatureEncoder
from propensity.training.explain import importance, reason_codes
from propensity.training.metrics import evaluate
from propensity.training.splits import check_class_counts, verify_no_overlap
from propensity.training.trainers import LightGBMModel, LogisticBaseline


@dataclass
class ScoredModel:
    """A raw model plus its calibrator. ``kind`` is ``baseline`` or ``lightgbm``."""

    kind: str
    model: LogisticBaseline | LightGBMModel
    calibrator: Calibrator

    def raw(self, x: np.ndarray, encoder: FeatureEncoder) -> np.ndarray:
        if isinstance(self.model, LightGBMModel):
            return self.model.raw(x)
        return self.model.raw(x, encoder)

    def predict(self, x: np.ndarray, encoder: FeatureEncoder) -> np.ndarray:
        return self.calibrator(self.raw(x, encoder))


@dataclass
class ActionResult:
    """One action's trained models, metrics on the test split, importances and bookkeeping."""

    action: str
    encoder: FeatureEncoder
    model: ScoredModel
    baseline: ScoredModel
    metrics: dict[str, Any]  # {"model": {...}, "baseline": {...}}
    importance: list[dict[str, Any]]
    reason_code_examples: list[dict[str, Any]]
    counts: dict[str, dict[str, int]]
    calibration_choice: dict[str, Any]
    test_predictions: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _examples(
    model: LightGBMModel, x: np.ndarray, names: list[str], p: np.ndarray, y: np.ndarray, k: int = 3
) -> list[dict[str, Any]]:
    """Reason codes of the ``k`` highest and ``k`` lowest test scores (no customer ids), for the report."""
    order = np.argsort(-p, kind="stable")
    idx = [int(i) for i in (*order[:k], *order[-k:])]
    codes = reason_codes(model, x[idx], names, top=3)
    return [{"score": float(p[i]), "label": int(y[i]), "reasons": c} for i, c in zip(idx, codes, strict=True)]


def fit_action(ts: TrainingSet, settings: TrainingSettings) -> ActionResult:
    import time

    name = ts.action.name
    verify_no_overlap(ts.table, action=name)
    check_class_counts(
        ts.table, min_positives=settings.min_positives, min_negatives=settings.min_negatives, action=name
    )
    t0 = time.perf_counter()
    train, cal, test = ts.split("train"), ts.split("calibration"), ts.split("test")
    encoder = FeatureEncoder.fit(train, ts.feature_names)
    xs = {k: encoder.matrix(t) for k, t in (("train", train), ("calibration", cal), ("test", test))}
    ys = {
        k: t.column("label").to_numpy().astype(np.float64)
        for k, t in (("train", train), ("calibration", cal), ("test", test))
    }
    t1 = time.perf_counter()
    booster = LightGBMModel.fit(
        xs["train"],
        ys["train"],
        train.column("customer_id").to_pylist(),
        encoder,
        settings.lightgbm,
        seed=settings.seed,
    )
    t2 = time.perf_counter()
    logit = LogisticBaseline.fit(xs["train"], ys["train"], encoder)
    t3 = time.perf_counter()
    models: dict[str, ScoredModel] = {}
    choice: dict[str, Any] = {}
    for kind, raw_model in (("lightgbm", booster), ("baseline", logit)):
        scored = ScoredModel(kind, raw_model, Calibrator("platt", {"a": 1.0, "b": 0.0}))
        raw_cal = scored.raw(xs["calibration"], encoder)
        calibrator, scores = choose_calibrator(
            raw_cal, ys["calibration"], method=settings.calibration, seed=settings.seed
        )
        scored.calibrator = calibrator
        models[kind] = scored
        choice[kind] = {"method": calibrator.method, "cross_fit_log_loss": scores}
    preds = {k: m.predict(xs["test"], encoder) for k, m in models.items()}
    metrics = {
        "model": evaluate(preds["lightgbm"], ys["test"]),
        "baseline": evaluate(preds["baseline"], ys["test"]),
    }
    metrics["model"]["trees"] = booster.num_trees
    t4 = time.perf_counter()
    imp = importance(booster, xs["test"], encoder.names, seed=settings.seed)
    examples = _examples(booster, xs["test"], encoder.names, preds["lightgbm"], ys["test"])
    t5 = time.perf_counter()
    return ActionResult(
        action=name,
        encoder=encoder,
        model=models["lightgbm"],
        baseline=models["baseline"],
        metrics=metrics,
        importance=imp,
        reason_code_examples=examples,
        counts=ts.counts(),
        calibration_choice=choice,
        test_predictions={"model": preds["lightgbm"], "baseline": preds["baseline"], "label": ys["test"]},
        seconds={
            "encode": t1 - t0,
            "lightgbm": t2 - t1,
            "baseline": t3 - t2,
            "calibrate_evaluate": t4 - t3,
            "importance": t5 - t4,
        },
    )
