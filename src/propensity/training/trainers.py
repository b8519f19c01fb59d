"""The two models trained per action, both stored as text/JSON (never pickle) and both calibrated afterwards.

* :class:`LogisticBaseline`: a regularised logistic regression on scaled features (signed ``log1p`` of numbers,
  median imputation plus a missing indicator, one-hot categories). Simple, hard to overfit; the bar to beat.
* :class:`LightGBMModel`: gradient-boosted trees with early stopping on a validation slice of the training
  split (whole customers held out), so the calibration split stays untouched for calibration.

Class imbalance: for rare actions (positive rate under 5%) LightGBM up-weights positives by
``sqrt(negatives / positives)``, which helps it find structure; the calibrator fitted afterwards on the
unweighted calibration split maps the scores back to true rates, so calibration is not broken by the weights.
Everything is deterministic given the seed.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.linear_model import LogisticRegression

from propensity.config.training import LightGBMSettings
from propensity.training.encoding import FeatureEncoder

RARE_RATE = 0.05
MULTI_THREAD_ROWS = 200_000


def _auto_threads(rows: int) -> int:
    # Small data trains in well under a second on one thread; OpenMP threads only add contention there.
    return 1 if rows < MULTI_THREAD_ROWS else max(1, min(8, os.cpu_count() or 1))


def customer_fold(customer_ids: list[str], fraction: float, seed: int) -> np.ndarray:
    """Deterministic per-customer membership of a ``fraction`` slice (the same customer, the same answer)."""
    salt = f"|{seed}".encode()
    h = np.fromiter(
        (zlib.crc32(c.encode() + salt) for c in customer_ids), dtype=np.uint32, count=len(customer_ids)
    )
    return (h.astype(np.float64) / 2**32) < fraction


@dataclass
class LogisticBaseline:
    """Expanded design: for each numeric feature its transformed value (+ a missing flag), one-hot categories."""

    columns: list[dict[str, Any]]
    means: list[float]
    scales: list[float]
    coef: list[float]
    intercept: float

    @staticmethod
    def _design(x: np.ndarray, encoder: FeatureEncoder, columns: list[dict[str, Any]]) -> np.ndarray:
        out = np.empty((x.shape[0], len(columns)))
        for k, c in enumerate(columns):
            v = x[:, c["index"]]
            if c["kind"] == "value":
                t = np.sign(v) * np.log1p(np.abs(v))
                out[:, k] = np.where(np.isnan(t), c["median"], t)
            elif c["kind"] == "missing":
                out[:, k] = np.isnan(v)
            else:
                out[:, k] = v == c["code"]
        return out

    @classmethod
    def fit(
        cls, x: np.ndarray, y: np.ndarray, encoder: FeatureEncoder, *, c: float = 1.0
    ) -> LogisticBaseline:
        columns: list[dict[str, Any]] = []
        for j, name in enumerate(encoder.names):
            v = x[:, j]
            if name in encoder.categories:
                for code in range(len(encoder.categories[name])):
                    columns.append({"index": j, "kind": "category", "code": code, "name": f"{name}={code}"})
                continue
            t = np.sign(v) * np.log1p(np.abs(v))
            finite = t[~np.isnan(t)]
            columns.append(
                {"index": j, "kind": "value", "median": float(np.median(finite)) if len(finite) else 0.0}
            )
            if np.isnan(v).any():
                columns.append({"index": j, "kind": "missing"})
        d = cls._design(x, encoder, columns)
        means = d.mean(axis=0)
        scales = d.std(axis=0)
        scales[scales == 0] = 1.0
        lr = LogisticRegression(C=c, solver="lbfgs", max_iter=500)
        lr.fit((d - means) / scales, y)
        return cls(columns, means.tolist(), scales.tolist(), lr.coef_[0].tolist(), float(lr.intercept_[0]))

    def raw(self, x: np.ndarray, encoder: FeatureEncoder) -> np.ndarray:
        d = (self._design(x, encoder, self.columns) - np.asarray(self.means)) / np.asarray(self.scales)
        return np.asarray(d @ np.asarray(self.coef) + self.intercept)

    def to_json(self) -> dict[str, Any]:
        return {
            "columns": self.columns,
            "means": self.means,
            "scales": self.scales,
            "coef": self.coef,
            "intercept": self.intercept,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LogisticBaseline:
        return cls(data["columns"], data["means"], data["scales"], data["coef"], data["intercept"])


@dataclass
class LightGBMModel:
    booster: lgb.Booster

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        customer_ids: list[str],
        encoder: FeatureEncoder,
        settings: LightGBMSettings,
        *,
        seed: int,
    ) -> LightGBMModel:
        val = customer_fold(customer_ids, settings.validation_fraction, seed)
        if y[val].min() == y[val].max() or y[~val].min() == y[~val].max():
            val = np.arange(len(y)) % 7 == 0  # tiny data: a fixed slice that still holds both classes
        pos = float(y[~val].mean())
        params: dict[str, Any] = {
            "objective": "binary",
            "learning_rate": settings.learning_rate,
            "num_leaves": settings.num_leaves,
            "min_child_samples": settings.min_child_samples,
            "feature_fraction": 0.9,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "lambda_l2": 1.0,
            "max_bin": 127,
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": settings.threads or _auto_threads(len(y)),
            "verbosity": -1,
        }
        if 0 < pos < RARE_RATE:
            params["scale_pos_weight"] = float(np.sqrt((1 - pos) / pos))
        cat = encoder.categorical_indices
        train = lgb.Dataset(
            x[~val], y[~val], categorical_feature=cat, feature_name=encoder.names, free_raw_data=True
        )
        valid = lgb.Dataset(
            x[val], y[val], reference=train, categorical_feature=cat, feature_name=encoder.names
        )
        booster = lgb.train(
            params,
            train,
            num_boost_round=settings.max_rounds,
            valid_sets=[valid],
            callbacks=[lgb.early_stopping(settings.early_stopping_rounds, verbose=False)],
        )
        # Keep only the chosen trees, so the stored text model is exactly what is evaluated.
        return cls(lgb.Booster(model_str=booster.model_to_string(num_iteration=booster.best_iteration)))

    def raw(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(x, raw_score=True))

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Per-row SHAP values in log-odds (``rows × (features + 1)``, the last column is the bias)."""
        return np.asarray(self.booster.predict(x, pred_contrib=True))

    @property
    def num_trees(self) -> int:
        return int(self.booster.num_trees())

    def to_text(self) -> str:
        return str(self.booster.model_to_string())

    @classmethod
    def from_text(cls, text: str) -> LightGBMModel:
        return cls(lgb.Booster(model_str=text))
