"""Uplift: who is persuadable. A two-model estimator and its Qini curve.

Two LightGBM classifiers learn the outcome rate from the features, one on treated rows and one on control rows;
a customer's predicted uplift is the difference, ``p_treated(x) - p_control(x)``. Predictions are cross-fitted:
the rows are split into folds by a hash of the customer, and each fold is scored by models trained on the
others, so the Qini curve is measured on rows the models never saw.

The Qini curve ranks rows by predicted uplift and, for the top share ``x`` of them, counts the incremental
outcomes ``Y_t(x) - Y_c(x) · N_t(x) / N_c(x)`` (treated positives minus control positives rescaled to the
number of treated rows), here divided by the number of rows. Random targeting gives the straight line from 0 to
the curve's end. The Qini coefficient is the area between the curve and that line (positive: better than
random); AUUC is the area under the curve itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np

from propensity.core.errors import PropensityError
from propensity.core.hashing import stable_fraction

CURVE_POINTS = 50
_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 7,
    "min_child_samples": 100,  # uplift is a small difference of two rates: favour smooth trees
    "num_threads": 1,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}


class UpliftDataError(PropensityError):
    """Too few treated or control rows (or outcomes) to fit an uplift model; the message says how many."""


def _fit_one(x: np.ndarray, y: np.ndarray, seed: int, rounds: int) -> lgb.Booster | float:
    """A classifier of ``y`` on ``x``, or the constant rate when ``y`` has one class only."""
    if y.min() == y.max():
        return float(y.mean())
    data = lgb.Dataset(x, label=y, free_raw_data=True)
    return lgb.train({**_PARAMS, "seed": seed}, data, num_boost_round=rounds)


def _predict(model: lgb.Booster | float, x: np.ndarray) -> np.ndarray:
    if isinstance(model, float):
        return np.full(x.shape[0], model)
    return np.asarray(model.predict(x), dtype=np.float64)


@dataclass
class TwoModelUplift:
    """``predict(x)`` = treated model's probability minus control model's."""

    treated_model: lgb.Booster | float
    control_model: lgb.Booster | float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return _predict(self.treated_model, x) - _predict(self.control_model, x)


def fit_two_model(
    x: np.ndarray, treated: np.ndarray, y: np.ndarray, *, seed: int = 0, rounds: int = 150
) -> TwoModelUplift:
    t = np.asarray(treated, dtype=bool)
    yy = np.asarray(y, dtype=np.float64)
    return TwoModelUplift(_fit_one(x[t], yy[t], seed, rounds), _fit_one(x[~t], yy[~t], seed, rounds))


def check_uplift_data(
    treated: np.ndarray, y: np.ndarray, *, min_rows: int = 100, min_positives: int = 10
) -> None:
    """Refuse data with too few rows or positive outcomes in either group."""
    t = np.asarray(treated, dtype=bool)
    yy = np.asarray(y, dtype=np.int64)
    for name, mask in (("treated", t), ("control", ~t)):
        rows, pos = int(mask.sum()), int(yy[mask].sum())
        if rows < min_rows or pos < min_positives:
            raise UpliftDataError(
                f"uplift needs at least {min_rows} {name} rows with {min_positives} positive outcomes; "
                f"found {rows} rows, {pos} positive"
            )


def cross_fitted_uplift(
    x: np.ndarray,
    treated: np.ndarray,
    y: np.ndarray,
    customer_ids: list[str],
    *,
    folds: int = 2,
    seed: int = 0,
    rounds: int = 150,
) -> np.ndarray:
    """Each row's predicted uplift from models fitted on the other folds (folds by a hash of the customer)."""
    fold = np.array([int(stable_fraction(c, f"uplift-fold-{seed}") * folds) for c in customer_ids])
    out = np.empty(len(customer_ids), dtype=np.float64)
    t = np.asarray(treated, dtype=bool)
    for k in range(folds):
        test = fold == k
        if not test.any():
            continue
        model = fit_two_model(x[~test], t[~test], y[~test], seed=seed, rounds=rounds)
        out[test] = model.predict(x[test])
    return out


@dataclass
class QiniCurve:
    """The Qini curve at every row (``share``: top share of rows, ``gain``: incremental outcomes / rows)."""

    share: np.ndarray
    gain: np.ndarray

    @property
    def auuc(self) -> float:
        """Area under the Qini curve (share 0 to 1)."""
        x = np.concatenate([[0.0], self.share])
        g = np.concatenate([[0.0], self.gain])
        return float(np.sum((x[1:] - x[:-1]) * (g[1:] + g[:-1]) / 2))

    @property
    def random_auuc(self) -> float:
        """Area under random targeting's straight line to the same end point."""
        return float(self.gain[-1] / 2) if len(self.gain) else 0.0

    @property
    def qini(self) -> float:
        """Qini coefficient: area between the curve and random targeting's line."""
        return self.auuc - self.random_auuc

    def points(self, n: int = CURVE_POINTS) -> list[tuple[float, float]]:
        """About ``n`` evenly spaced points for charts and JSON, starting at (0, 0)."""
        if not len(self.share):
            return [(0.0, 0.0)]
        idx = np.unique(np.linspace(0, len(self.share) - 1, n).round().astype(int))
        return [(0.0, 0.0)] + [(float(self.share[i]), float(self.gain[i])) for i in idx]


def qini_curve(uplift: np.ndarray, treated: np.ndarray, y: np.ndarray) -> QiniCurve:
    order = np.argsort(-np.asarray(uplift, dtype=np.float64), kind="stable")
    t = np.asarray(treated, dtype=np.float64)[order]
    yy = np.asarray(y, dtype=np.float64)[order]
    n = len(t)
    n_t, n_c = np.cumsum(t), np.cumsum(1 - t)
    y_t, y_c = np.cumsum(yy * t), np.cumsum(yy * (1 - t))
    scale = np.divide(n_t, n_c, out=np.zeros(n), where=n_c > 0)
    gain = (y_t - y_c * scale) / max(n, 1)
    return QiniCurve(np.arange(1, n + 1) / max(n, 1), gain)


@dataclass
class UpliftResult:
    """Out-of-fold evaluation of a two-model uplift estimator."""

    method: str
    rows: int
    qini: float
    auuc: float
    random_auuc: float
    curve: list[tuple[float, float]]
    # Mean realised uplift (treated rate - control rate) in each fifth of rows by predicted uplift, top first.
    by_quintile: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "rows": self.rows,
            "qini": self.qini,
            "auuc": self.auuc,
            "random_auuc": self.random_auuc,
            "beats_random": self.qini > 0,
            "curve": [list(p) for p in self.curve],
            "by_quintile": self.by_quintile,
        }


def _quintiles(uplift: np.ndarray, treated: np.ndarray, y: np.ndarray) -> list[dict[str, Any]]:
    order = np.argsort(-uplift, kind="stable")
    out = []
    for i, part in enumerate(np.array_split(order, 5)):
        t = treated[part].astype(bool)
        yy = y[part].astype(np.float64)
        rt = float(yy[t].mean()) if t.any() else None
        rc = float(yy[~t].mean()) if (~t).any() else None
        out.append(
            {
                "quintile": i + 1,
                "rows": len(part),
                "predicted_uplift": float(uplift[part].mean()) if len(part) else None,
                "rate_treated": rt,
                "rate_control": rc,
                "realised_uplift": None if rt is None or rc is None else rt - rc,
            }
        )
    return out


def evaluate_uplift(
    x: np.ndarray,
    treated: np.ndarray,
    y: np.ndarray,
    customer_ids: list[str],
    *,
    seed: int = 0,
    folds: int = 2,
    min_rows: int = 100,
    min_positives: int = 10,
) -> tuple[UpliftResult, np.ndarray]:
    """Cross-fit the two-model estimator and measure its Qini; returns the result and each row's uplift."""
    t = np.asarray(treated, dtype=bool)
    yy = np.asarray(y, dtype=np.int64)
    check_uplift_data(t, yy, min_rows=min_rows, min_positives=min_positives)
    u = cross_fitted_uplift(x, t, yy, customer_ids, folds=folds, seed=seed)
    curve = qini_curve(u, t, yy)
    result = UpliftResult(
        "two-model (LightGBM), cross-fitted", len(yy), curve.qini, curve.auuc, curve.random_auuc,
        curve.points(), _quintiles(u, t, yy),
    )  # fmt: skip
    return result, u
