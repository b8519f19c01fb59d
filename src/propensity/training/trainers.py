"""The models trained per action, all stored as text/JSON (never pickle) and calibrated afterwards.

* :class:`LogisticBaseline`: a plain regularised logistic regression on scaled features (signed ``log1p`` of
  numbers, median imputation plus a missing indicator, one-hot categories), as a user's own script would fit.
  Reported next to the served model as the bar to beat; never served.
* :class:`LightGBMModel`: gradient-boosted trees; :meth:`LightGBMModel.train` boosts a fixed number of rounds or
  stops early on a validation slice (the search in :mod:`propensity.training.candidates` picks the settings).
* :class:`ServedModel`: what an action serves: the linear candidate
  (:class:`~propensity.training.linear.AdditiveLogistic`), LightGBM, or a blend of the two.

No class weights: every model is fitted on the unweighted rows by log loss, so its scores are already close to
calibrated before the calibrator. Everything is deterministic given the seed.
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
from propensity.training.linear import AdditiveLogistic

MULTI_THREAD_ROWS = 100_000


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


def lightgbm_params(config: dict[str, Any], *, seed: int, rows: int, threads: int = 0) -> dict[str, Any]:
    """LightGBM parameters for one candidate ``config`` (leaves, leaf size, regularisation, learning rate)."""
    return {
        "objective": "binary",
        "learning_rate": config.get("learning_rate", 0.05),
        "num_leaves": config.get("num_leaves", 31),
        "min_child_samples": config.get("min_child_samples", 100),
        "min_sum_hessian_in_leaf": config.get("min_sum_hessian_in_leaf", 1e-3),
        "lambda_l2": config.get("lambda_l2", 1.0),
        "feature_fraction": config.get("feature_fraction", 0.9),
        "bagging_fraction": config.get("bagging_fraction", 0.8),
        "bagging_freq": 1,
        "max_bin": 127,
        "feature_pre_filter": False,
        "cat_smooth": config.get("cat_smooth", 10.0),
        "min_data_per_group": config.get("min_data_per_group", 100),
        "seed": seed,
        "deterministic": True,
        "force_row_wise": True,
        "num_threads": threads or _auto_threads(rows),
        "verbosity": -1,
    }


@dataclass
class LightGBMModel:
    booster: lgb.Booster

    kind = "lightgbm"

    @classmethod
    def train(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        encoder: FeatureEncoder,
        params: dict[str, Any],
        *,
        rounds: int,
        valid: tuple[np.ndarray, np.ndarray] | None = None,
        stopping: int = 50,
        datasets: tuple[lgb.Dataset, lgb.Dataset | None] | None = None,
    ) -> tuple[LightGBMModel, int, float | None]:
        """Boost ``rounds`` trees, or stop early on ``valid`` (``(x, y)``); return the model trimmed to its
        best iteration, the number of trees and the validation log loss at that iteration.

        ``datasets`` (from :meth:`datasets`) reuses binned data across configurations (the search)."""
        if datasets is None:
            datasets = cls.datasets(x, y, encoder, valid)
        train, vset = datasets
        if vset is None:
            booster = lgb.train(params, train, num_boost_round=rounds)
            return cls(booster), int(booster.num_trees()), None
        result: dict[str, Any] = {}
        booster = lgb.train(
            {**params, "metric": "binary_logloss"},
            train,
            num_boost_round=rounds,
            valid_sets=[vset],
            valid_names=["valid"],
            callbacks=[lgb.early_stopping(stopping, verbose=False), lgb.record_evaluation(result)],
        )
        best = max(1, int(booster.best_iteration or booster.current_iteration()))
        loss = float(result["valid"]["binary_logloss"][best - 1])
        # Keep only the chosen trees, so the stored text model is exactly what is evaluated.
        trimmed = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
        return cls(trimmed), best, loss

    @staticmethod
    def datasets(
        x: np.ndarray, y: np.ndarray, encoder: FeatureEncoder, valid: tuple[np.ndarray, np.ndarray] | None
    ) -> tuple[lgb.Dataset, lgb.Dataset | None]:
        """LightGBM's binned training (and validation) data, reusable by configurations that differ only in
        tree parameters (``feature_pre_filter`` off, so leaf sizes may change between them)."""
        cat = encoder.categorical_indices
        binning = {"max_bin": 127, "feature_pre_filter": False, "verbosity": -1}
        train = lgb.Dataset(
            x, y, categorical_feature=cat, feature_name=encoder.names, params=binning, free_raw_data=False
        )
        if valid is None:
            return train, None
        vset = lgb.Dataset(
            valid[0], valid[1], reference=train, categorical_feature=cat, feature_name=encoder.names,
            params=binning, free_raw_data=False,
        )  # fmt: skip
        return train, vset

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
        """The fixed configuration of ``settings``, stopped early on a slice of whole customers."""
        val = customer_fold(customer_ids, settings.validation_fraction, seed)
        if y[val].min() == y[val].max() or y[~val].min() == y[~val].max():
            val = np.arange(len(y)) % 7 == 0  # tiny data: a fixed slice that still holds both classes
        params = lightgbm_params(
            {"learning_rate": settings.learning_rate, "num_leaves": settings.num_leaves,
             "min_child_samples": settings.min_child_samples},
            seed=seed, rows=len(y), threads=settings.threads,
        )  # fmt: skip
        model, _, _ = cls.train(
            x[~val], y[~val], encoder, params, rounds=settings.max_rounds, valid=(x[val], y[val]),
            stopping=settings.early_stopping_rounds,
        )  # fmt: skip
        return model

    def raw(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.booster.predict(x, raw_score=True))

    def contributions(self, x: np.ndarray, n_features: int | None = None) -> np.ndarray:
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


@dataclass
class ServedModel:
    """What one action scores with, before calibration: the linear model, LightGBM, or a blend of both.

    A blend's log-odds are ``weights["linear"] · linear + weights["lightgbm"] · lightgbm`` (two products and a
    sum, in that order, so the compiled scorer reproduces them exactly).
    """

    kind: str  # "linear" | "lightgbm" | "blend"
    linear: AdditiveLogistic | None = None
    lightgbm: LightGBMModel | None = None
    weights: dict[str, float] | None = None

    def raw(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "linear":
            assert self.linear is not None
            return self.linear.raw(x)
        if self.kind == "lightgbm":
            assert self.lightgbm is not None
            return self.lightgbm.raw(x)
        assert self.linear is not None and self.lightgbm is not None and self.weights is not None
        return self.weights["linear"] * self.linear.raw(x) + self.weights["lightgbm"] * self.lightgbm.raw(x)

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Per-row, per-feature contributions to the log-odds, ``rows × (features + 1)`` (last: the bias).

        LightGBM: TreeSHAP; linear: each term minus its training mean; a blend: the weighted sum of both."""
        n = x.shape[1]
        if self.kind == "linear":
            assert self.linear is not None
            return self.linear.contributions(x, n)
        if self.kind == "lightgbm":
            assert self.lightgbm is not None
            return self.lightgbm.contributions(x)
        assert self.linear is not None and self.lightgbm is not None and self.weights is not None
        return self.weights["linear"] * self.linear.contributions(x, n) + self.weights[
            "lightgbm"
        ] * self.lightgbm.contributions(x)

    @property
    def num_trees(self) -> int:
        return self.lightgbm.num_trees if self.lightgbm is not None else 0

    def spec(self) -> dict[str, Any]:
        """The bundle's ``model.json``: the kind and, for a blend, the weights."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.weights is not None:
            out["weights"] = self.weights
        return out

    def files(self) -> dict[str, bytes]:
        """The model's files in a bundle (text and JSON only)."""
        import json

        out = {"model.json": json.dumps(self.spec(), sort_keys=True, separators=(",", ":")).encode()}
        if self.lightgbm is not None:
            out["model.txt"] = self.lightgbm.to_text().encode("utf-8")
        if self.linear is not None:
            out["linear.json"] = json.dumps(
                self.linear.to_json(), sort_keys=True, separators=(",", ":"), allow_nan=False
            ).encode()
        return out

    @classmethod
    def from_files(cls, read: Any) -> ServedModel:
        """``read(name) -> str | None`` gives a file's text; a bundle without ``model.json`` is LightGBM."""
        import json

        spec_text = read("model.json")
        spec: dict[str, Any] = json.loads(spec_text) if spec_text else {"kind": "lightgbm"}
        kind = spec["kind"]
        lin = gbm = None
        if kind in ("linear", "blend"):
            lin = AdditiveLogistic.from_json(json.loads(read("linear.json")))
        if kind in ("lightgbm", "blend"):
            gbm = LightGBMModel.from_text(read("model.txt"))
        weights: dict[str, Any] | None = spec.get("weights")
        return cls(kind, lin, gbm, {k: float(v) for k, v in weights.items()} if weights else None)
