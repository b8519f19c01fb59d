"""Calibration: map a model's raw scores to probabilities that mean what they say.

Two calibrators, both fitted on the calibration split (data the model never saw) and stored as JSON:
``platt`` (a logistic curve on the raw log-odds; smooth, needs little data) and ``isotonic`` (a monotone step
function, interpolated; flexible, needs more data). ``choose_calibrator`` picks the one with the lower log loss
in a two-fold cross-fit on the calibration split, so the choice is made on the same split without overfitting it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

EPS = 1e-6


def _logloss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@dataclass
class Calibrator:
    """``method`` platt: p = σ(a·raw + b); isotonic: p = interp(raw, x, y)."""

    method: Literal["platt", "isotonic"]
    params: dict[str, Any]

    @classmethod
    def fit(cls, method: Literal["platt", "isotonic"], raw: np.ndarray, y: np.ndarray) -> Calibrator:
        if method == "platt":
            lr = LogisticRegression(C=1e6, solver="lbfgs", max_iter=1000)
            lr.fit(raw.reshape(-1, 1), y)
            return cls("platt", {"a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])})
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        iso.fit(raw, y)
        x = np.asarray(iso.X_thresholds_, dtype=float)
        v = np.asarray(iso.y_thresholds_, dtype=float)
        return cls("isotonic", {"x": x.tolist(), "y": v.tolist()})

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        if self.method == "platt":
            z = self.params["a"] * raw + self.params["b"]
            p = 1.0 / (1.0 + np.exp(-z))
        else:
            p = np.interp(raw, np.asarray(self.params["x"]), np.asarray(self.params["y"]))
        return np.clip(p, EPS, 1 - EPS)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, **self.params}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibrator:
        method = data["method"]
        return cls(method, {k: v for k, v in data.items() if k != "method"})


def choose_calibrator(
    raw: np.ndarray, y: np.ndarray, *, method: Literal["auto", "platt", "isotonic"] = "auto", seed: int = 0
) -> tuple[Calibrator, dict[str, float]]:
    """Fit the calibrator on the calibration split; ``auto`` picks by two-fold cross-fitted log loss."""
    if method != "auto":
        return Calibrator.fit(method, raw, y), {}
    rng = np.random.default_rng(seed)
    fold = rng.random(len(y)) < 0.5
    scores: dict[str, float] = {}
    methods: tuple[Literal["platt", "isotonic"], ...] = ("platt", "isotonic")
    for m in methods:
        losses = []
        for f in (fold, ~fold):
            if y[~f].min() == y[~f].max() or f.sum() == 0:
                continue
            cal = Calibrator.fit(m, raw[~f], y[~f])
            losses.append(_logloss(cal(raw[f]), y[f]) * f.sum())
        scores[m] = float(sum(losses) / len(y)) if losses else float("inf")
    best = min(methods, key=lambda k: scores[k])
    return Calibrator.fit(best, raw, y), scores
