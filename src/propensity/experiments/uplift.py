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


# ------------------------------------------------------------------------------ normalised (scikit-uplift) metrics
# The figures below are defined as scikit-uplift (sklift.metrics) defines them, so they compare with published
# ones: the curves are taken at the end of each run of tied predictions, start at (0, 0), and are measured in
# rows and outcomes (not shares); areas are trapezoids.


def _sorted_cumulative(
    y: np.ndarray, uplift: np.ndarray, treated: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows ranked by predicted uplift (highest first), cumulated at the end of each run of ties:
    (rows, treated rows, treated outcomes, control rows, control outcomes)."""
    u = np.asarray(uplift, dtype=np.float64)
    order = np.argsort(-u, kind="stable")
    ys = np.asarray(y, dtype=np.float64)[order]
    ts = np.asarray(treated, dtype=np.float64)[order]
    us = u[order]
    ends = np.r_[np.flatnonzero(np.diff(us) != 0), len(us) - 1] if len(us) else np.array([], dtype=int)
    n = (ends + 1).astype(np.float64)
    n_t = np.cumsum(ts)[ends]
    y_t = np.cumsum(ys * ts)[ends]
    y_c = np.cumsum(ys * (1.0 - ts))[ends]
    return n, n_t, y_t, n - n_t, y_c


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b != 0)


def _from_origin(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not len(x) or x[0] != 0 or g[0] != 0:
        return np.r_[0.0, x], np.r_[0.0, g]
    return x, g


def qini_points(y: np.ndarray, uplift: np.ndarray, treated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Qini curve: rows targeted → ``Y_t − Y_c · N_t / N_c`` (incremental outcomes)."""
    n, n_t, y_t, n_c, y_c = _sorted_cumulative(y, uplift, treated)
    return _from_origin(n, y_t - y_c * _div(n_t, n_c))


def uplift_points(y: np.ndarray, uplift: np.ndarray, treated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The uplift curve: rows targeted → ``(Y_t / N_t − Y_c / N_c) · N``."""
    n, n_t, y_t, n_c, y_c = _sorted_cumulative(y, uplift, treated)
    return _from_origin(n, (_div(y_t, n_t) - _div(y_c, n_c)) * n)


def _area(x: np.ndarray, g: np.ndarray) -> float:
    return float(np.sum((x[1:] - x[:-1]) * (g[1:] + g[:-1]) / 2.0)) if len(x) > 1 else 0.0


def _normalised(actual: tuple[np.ndarray, np.ndarray], perfect: tuple[np.ndarray, np.ndarray]) -> float:
    """(area of actual − area of random) / (area of perfect − area of random); random: the straight line to the
    perfect curve's end."""
    xp, gp = perfect
    random = float(xp[-1] * gp[-1] / 2.0)
    denom = _area(xp, gp) - random
    return float((_area(*actual) - random) / denom) if denom != 0 else float("nan")


def perfect_qini_points(y: np.ndarray, treated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The best possible Qini curve (negative effects included): treated responders first, control responders
    last."""
    yy = np.asarray(y, dtype=np.float64)
    t = np.asarray(treated, dtype=np.float64)
    return qini_points(yy, yy * t - yy * (1.0 - t), t)


def perfect_uplift_points(y: np.ndarray, treated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    yy = np.asarray(y, dtype=np.float64)
    t = np.asarray(treated, dtype=np.float64)
    control_responders = float(((yy == 1) & (t == 0)).sum())
    treated_non_responders = float(((yy == 0) & (t == 1)).sum())
    summand = yy if control_responders > treated_non_responders else t
    return uplift_points(yy, 2.0 * (yy == t) + summand, t)


def qini_auc_score(y: np.ndarray, uplift: np.ndarray, treated: np.ndarray) -> float:
    """The normalised Qini coefficient (scikit-uplift's ``qini_auc_score``, negative effects included): 1 for a
    perfect ranking, 0 for random targeting, negative for worse than random.

    >>> y = np.array([1, 0, 1, 0, 0, 1, 0, 0]); t = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    >>> qini_auc_score(y, np.array([.9, .1, .8, .2, .3, .05, .4, .5]), t)   # responders first: perfect
    1.0
    >>> round(qini_auc_score(y, np.array([.9, .1, .2, .8, .3, .05, .4, .5]), t), 4)
    0.5789
    """
    return _normalised(qini_points(y, uplift, treated), perfect_qini_points(y, treated))


def uplift_auc_score(y: np.ndarray, uplift: np.ndarray, treated: np.ndarray) -> float:
    """The normalised area under the uplift curve (scikit-uplift's ``uplift_auc_score``)."""
    return _normalised(uplift_points(y, uplift, treated), perfect_uplift_points(y, treated))


def uplift_at_k(
    y: np.ndarray, uplift: np.ndarray, treated: np.ndarray, k: float, *, strategy: str = "overall"
) -> float | None:
    """Treated rate − control rate among the top ``k`` share by predicted uplift (scikit-uplift's
    ``uplift_at_k``): ``overall`` takes the top ``int(n·k)`` rows of both groups together, ``by_group`` the top
    ``int(n_t·k)`` treated and ``int(n_c·k)`` control rows. None when a group has no row there."""
    u = np.asarray(uplift, dtype=np.float64)
    yy = np.asarray(y, dtype=np.float64)
    t = np.asarray(treated, dtype=bool)
    order = np.argsort(u, kind="mergesort")[::-1]
    ys, ts = yy[order], t[order]
    if strategy == "overall":
        top = int(len(yy) * k)
        yt, yc = ys[:top][ts[:top]], ys[:top][~ts[:top]]
    elif strategy == "by_group":
        yt, yc = ys[ts][: int(t.sum() * k)], ys[~ts][: int((~t).sum() * k)]
    else:
        raise ValueError(f"strategy must be overall or by_group, got {strategy!r}")
    if not len(yt) or not len(yc):
        return None
    return float(yt.mean() - yc.mean())


@dataclass
class PermutationTest:
    """How the model's normalised Qini compares with random orderings of the same rows."""

    statistic: float
    p_value: float
    permutations: int
    random_mean: float
    random_q95: float
    alpha: float = 0.05

    @property
    def beats_random(self) -> bool:
        return self.p_value < self.alpha

    @property
    def verdict(self) -> str:
        if self.beats_random:
            return f"beats random ordering (p = {self.p_value:.3f})"
        return f"indistinguishable from random (p = {self.p_value:.3f})"

    def to_json(self) -> dict[str, Any]:
        return {
            "statistic": "normalised Qini coefficient",
            "observed": self.statistic,
            "p_value": self.p_value,
            "permutations": self.permutations,
            "random_mean": self.random_mean,
            "random_q95": self.random_q95,
            "alpha": self.alpha,
            "verdict": self.verdict,
        }


def permutation_test(
    y: np.ndarray,
    uplift: np.ndarray,
    treated: np.ndarray,
    *,
    permutations: int = 500,
    seed: int = 0,
    alpha: float = 0.05,
) -> PermutationTest:
    """One-sided test of "the ranking is no better than a random ordering": the model's normalised Qini against
    the normalised Qinis of ``permutations`` random orderings of the same rows; ``p = (1 + #{random ≥ observed})
    / (1 + permutations)``."""
    yy = np.asarray(y, dtype=np.float64)
    t = np.asarray(treated, dtype=np.float64)
    perfect = perfect_qini_points(yy, t)
    observed = _normalised(qini_points(yy, uplift, t), perfect)
    rng = np.random.default_rng(seed)
    n = len(yy)
    xs = np.arange(n + 1, dtype=np.float64)
    random_line = float(perfect[0][-1] * perfect[1][-1] / 2.0)
    denom = _area(*perfect) - random_line
    stats = np.empty(permutations)
    for i in range(permutations):
        order = rng.permutation(n)
        ts, ys = t[order], yy[order]
        n_t = np.cumsum(ts)
        y_t = np.cumsum(ys * ts)
        y_c = np.cumsum(ys * (1.0 - ts))
        g = np.r_[0.0, y_t - y_c * _div(n_t, xs[1:] - n_t)]
        stats[i] = (_area(xs, g) - random_line) / denom if denom != 0 else np.nan
    exceed = int(np.sum(stats >= observed - 1e-12))
    return PermutationTest(
        statistic=observed,
        p_value=(1 + exceed) / (1 + permutations),
        permutations=permutations,
        random_mean=float(np.nanmean(stats)),
        random_q95=float(np.nanquantile(stats, 0.95)),
        alpha=alpha,
    )


UPLIFT_AT = (0.1, 0.2, 0.3)


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
    qini_coefficient: float | None = None  # normalised as scikit-uplift does (qini_auc_score)
    uplift_auc: float | None = None  # normalised as scikit-uplift does (uplift_auc_score)
    uplift_at: dict[str, float | None] = field(default_factory=dict)
    test: PermutationTest | None = None

    @property
    def beats_random(self) -> bool:
        return self.test.beats_random if self.test is not None else self.qini > 0

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "rows": self.rows,
            "qini_coefficient": self.qini_coefficient,
            "uplift_auc": self.uplift_auc,
            "uplift_at_k": self.uplift_at,
            "permutation_test": None if self.test is None else self.test.to_json(),
            "beats_random": self.beats_random,
            "verdict": self.test.verdict if self.test is not None else None,
            "qini": self.qini,
            "auuc": self.auuc,
            "random_auuc": self.random_auuc,
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


def evaluate_predictions(
    u: np.ndarray,
    treated: np.ndarray,
    y: np.ndarray,
    *,
    seed: int = 0,
    permutations: int = 500,
    method: str = "two-model (LightGBM), cross-fitted",
) -> UpliftResult:
    """Every figure of an uplift ranking ``u`` on rows with their treatment and outcome."""
    t = np.asarray(treated, dtype=bool)
    yy = np.asarray(y, dtype=np.int64)
    curve = qini_curve(u, t, yy)
    return UpliftResult(
        method, len(yy), curve.qini, curve.auuc, curve.random_auuc, curve.points(), _quintiles(u, t, yy),
        qini_coefficient=qini_auc_score(yy, u, t), uplift_auc=uplift_auc_score(yy, u, t),
        uplift_at={f"{k:g}": uplift_at_k(yy, u, t, k) for k in UPLIFT_AT},
        test=permutation_test(yy, u, t, permutations=permutations, seed=seed),
    )  # fmt: skip


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
    return evaluate_predictions(u, t, yy, seed=seed), u
