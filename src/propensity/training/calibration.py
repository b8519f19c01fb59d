"""Calibration: map a model's raw scores to probabilities that mean what they say.

Three calibrators, fitted on scores the model did not train on and stored as JSON: ``identity`` (the model's own
log-odds through the sigmoid; right for a model fitted by log loss on data like today's), ``platt`` (a logistic
curve on the raw log-odds; smooth, needs little data) and ``isotonic`` (a monotone step function, interpolated;
flexible, needs many rows of both classes, so it is only tried with at least ``ISOTONIC_MIN_CLASS`` of each).
``choose_calibrator`` picks the one with the lowest log loss in a two-fold cross-fit over the held-out scores,
so the choice itself is made on held-out data; ``training.calibration`` may force one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.isotonic import IsotonicRegression

EPS = 1e-6
ISOTONIC_MIN_CLASS = 500  # positives and negatives each, for isotonic to be considered
Method = Literal["identity", "platt", "isotonic"]
METHODS: tuple[Method, ...] = ("identity", "platt", "isotonic")  # simplest first: ties go to the simpler


def _logloss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@dataclass
class Calibrator:
    """``method`` identity: p = σ(raw); platt: p = σ(a·raw + b); isotonic: p = interp(raw, x, y)."""

    method: Method
    params: dict[str, Any]

    @classmethod
    def fit(cls, method: Method, raw: np.ndarray, y: np.ndarray) -> Calibrator:
        if method == "identity":
            return cls("identity", {})
        if method == "platt":
            a, b = _platt(np.asarray(raw, dtype=np.float64), np.asarray(y, dtype=np.float64))
            return cls("platt", {"a": a, "b": b})
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        iso.fit(raw, y)
        x = np.asarray(iso.X_thresholds_, dtype=float)
        v = np.asarray(iso.y_thresholds_, dtype=float)
        return cls("isotonic", {"x": x.tolist(), "y": v.tolist()})

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        if self.method == "identity":
            p = _sigmoid(raw)
        elif self.method == "platt":
            p = _sigmoid(self.params["a"] * raw + self.params["b"])
        else:
            p = np.interp(raw, np.asarray(self.params["x"]), np.asarray(self.params["y"]))
        return np.clip(p, EPS, 1 - EPS)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, **self.params}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibrator:
        method = data["method"]
        return cls(method, {k: v for k, v in data.items() if k != "method"})


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # The two branches serving uses (propensity.scoring.model.calibrate), so neither side overflows.
    z = np.asarray(z, dtype=np.float64)
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _platt(raw: np.ndarray, y: np.ndarray, *, iterations: int = 50) -> tuple[float, float]:
    """Maximum-likelihood ``a, b`` of σ(a·raw + b) by Newton's method (a 1e-6 ridge keeps separable data
    finite); deterministic and much cheaper than a general solver for two parameters."""
    z = np.clip(raw, -50.0, 50.0)
    a, b = 1.0, 0.0
    ridge = 1e-6 * len(y)
    prev = np.inf
    for _ in range(iterations):
        p = _sigmoid(a * z + b)
        w = np.maximum(p * (1 - p), 1e-12)
        r = p - y
        g = np.array([np.dot(r, z) + ridge * a, r.sum() + ridge * b])
        h = np.array([[np.dot(w * z, z) + ridge, np.dot(w, z)], [np.dot(w, z), w.sum() + ridge]])
        try:
            step = np.linalg.solve(h, g)
        except np.linalg.LinAlgError:
            break
        # Halve the step while it does not lower the penalised log loss.
        loss = _penalised(a, b, z, y, ridge)
        t = 1.0
        while t > 1e-6 and _penalised(a - t * step[0], b - t * step[1], z, y, ridge) > loss:
            t /= 2
        a, b = a - t * step[0], b - t * step[1]
        if abs(prev - loss) < 1e-12 * max(1.0, abs(loss)):
            break
        prev = loss
    return float(a), float(b)


def _penalised(a: float, b: float, z: np.ndarray, y: np.ndarray, ridge: float) -> float:
    s = a * z + b
    return float(np.sum(np.logaddexp(0.0, s) - y * s) + 0.5 * ridge * (a * a + b * b))


def isotonic_allowed(y: np.ndarray) -> bool:
    pos = float(np.sum(y))
    return min(pos, len(y) - pos) >= ISOTONIC_MIN_CLASS


def cross_fit_losses(
    raw: np.ndarray, y: np.ndarray, *, seed: int = 0, methods: tuple[Method, ...] = METHODS
) -> dict[str, float]:
    """Each method's log loss on held-out halves (fitted on one half, scored on the other, both ways)."""
    rng = np.random.default_rng(seed)
    fold = rng.random(len(y)) < 0.5
    scores: dict[str, float] = {}
    for m in methods:
        if m == "isotonic" and not isotonic_allowed(y):
            continue
        losses = []
        for f in (fold, ~fold):
            if f.sum() == 0 or (~f).sum() == 0 or y[~f].min() == y[~f].max():
                continue
            cal = Calibrator.fit(m, raw[~f], y[~f])
            losses.append(_logloss(cal(raw[f]), y[f]) * f.sum())
        scores[m] = float(sum(losses) / len(y)) if losses else float("inf")
    return scores


def choose_calibrator(
    raw: np.ndarray,
    y: np.ndarray,
    *,
    method: Literal["auto", "identity", "platt", "isotonic", "none"] = "auto",
    seed: int = 0,
) -> tuple[Calibrator, dict[str, float]]:
    """Fit the calibrator on held-out scores; ``auto`` picks by two-fold cross-fitted log loss (ties: the
    simpler method). ``none`` is ``identity``. Isotonic needs ``ISOTONIC_MIN_CLASS`` rows of each class."""
    if method == "none":
        method = "identity"
    if method != "auto":
        if y.min() == y.max():
            return Calibrator("identity", {}), {}
        return Calibrator.fit(method, raw, y), {}
    scores = cross_fit_losses(raw, y, seed=seed)
    best = min(scores, key=lambda k: (round(scores[k], 9), METHODS.index(k)))
    if y.min() == y.max():
        return Calibrator("identity", {}), scores
    return Calibrator.fit(best, raw, y), scores  # type: ignore[arg-type]
