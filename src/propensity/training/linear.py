"""The linear candidate: a regularised logistic regression with a piecewise-linear term per numeric feature.

Each numeric feature gets knots at the quantiles of its training values (every distinct value when there are
few, so a count of 0–5 gets a free value per count); its term is linear between knots and flat outside them,
so a score never extrapolates beyond what training saw. A missing value has its own fitted value, and each
category of a text feature its own value (unseen or missing: the missing value). The model is fitted by
penalised maximum likelihood: the penalty on the differences between neighbouring knot values keeps each term
smooth (strong penalty: flat, i.e. the feature is dropped), a small ridge keeps category and missing values near
the average. The strength is chosen on time-ordered validation data (:mod:`propensity.training.candidates`).

The fitted model is stored as plain JSON (knots, values, slopes, the missing value, the intercept) and
evaluated by :func:`additive_raw` with a fixed order of floating-point operations, so that the compiled scorer
(:mod:`propensity.scoring.compiled`) reproduces training-time scores exactly, for one row or millions.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.uniform(0, 10, size=(4000, 1)); y = (rng.random(4000) < 1 / (1 + np.exp(3 - x[:, 0] / 2))).astype(float)
>>> m = AdditiveLogistic.fit(x, y, ["x"], {}, penalty=10.0)
>>> bool(m.raw(np.array([[1.0], [9.0]]))[0] < m.raw(np.array([[9.0]]))[0])
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize, sparse

MAX_KNOTS = 12
RIDGE = 0.05  # relative to the difference penalty: keeps category and missing values near the average


@dataclass
class Term:
    """One feature's additive contribution to the log-odds.

    Numeric: ``knots`` ascending, ``values`` at the knots, ``slopes[k]`` between knot k and k+1; below the first
    knot the first value, above the last the last value. Categorical: ``values[code]`` per category code.
    Either way ``missing`` is the value for a missing (NaN) input, and ``center`` the term's mean on the
    training rows (a reason code is the term minus its center).
    """

    feature: int
    name: str
    kind: str  # "numeric" | "categorical"
    values: list[float]
    missing: float
    center: float = 0.0
    knots: list[float] = field(default_factory=list)
    slopes: list[float] = field(default_factory=list)

    def evaluate(self, v: np.ndarray) -> np.ndarray:
        """The term for a column of inputs (NaN = missing), with the operation order of :func:`term_one`."""
        out = np.full(v.shape, self.missing, dtype=np.float64)
        ok = ~np.isnan(v)
        vals = np.asarray(self.values, dtype=np.float64)
        if self.kind == "categorical":
            code = np.where(ok, v, -1.0)
            good = ok & (code >= 0) & (code < len(vals)) & (code == np.floor(code))
            out[good] = vals[code[good].astype(np.int64)]
            return out
        knots = np.asarray(self.knots, dtype=np.float64)
        xs = v[ok]
        if len(knots) == 1:
            out[ok] = vals[0]
            return out
        k = np.searchsorted(knots, xs, side="right") - 1
        inside = (k >= 0) & (k < len(knots) - 1)
        kk = np.clip(k, 0, len(knots) - 2)
        slopes = np.asarray(self.slopes, dtype=np.float64)
        seg = vals[kk] + slopes[kk] * (xs - knots[kk])
        res = np.where(k < 0, vals[0], np.where(inside, seg, vals[-1]))
        out[ok] = res
        return out

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "feature": self.feature,
            "name": self.name,
            "kind": self.kind,
            "values": self.values,
            "missing": self.missing,
            "center": self.center,
        }
        if self.kind == "numeric":
            out["knots"] = self.knots
            out["slopes"] = self.slopes
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Term:
        return cls(
            int(d["feature"]),
            str(d["name"]),
            str(d["kind"]),
            [float(v) for v in d["values"]],
            float(d["missing"]),
            float(d.get("center", 0.0)),
            [float(v) for v in d.get("knots", [])],
            [float(v) for v in d.get("slopes", [])],
        )


def term_one(term: Term, v: float) -> float:
    """One term for one input, the same arithmetic as :meth:`Term.evaluate` (the serving path)."""
    if v != v:  # NaN
        return term.missing
    if term.kind == "categorical":
        if v >= 0 and v < len(term.values) and v == int(v):
            return term.values[int(v)]
        return term.missing
    knots = term.knots
    if len(knots) == 1 or v < knots[0]:
        return term.values[0]
    if v >= knots[-1]:
        return term.values[-1]
    import bisect

    k = bisect.bisect_right(knots, v) - 1
    return term.values[k] + term.slopes[k] * (v - knots[k])


def additive_raw(x: np.ndarray, intercept: float, terms: list[Term]) -> np.ndarray:
    """Log-odds of every row: the intercept plus each term, added in term order (fixed rounding)."""
    acc = np.full(x.shape[0], intercept, dtype=np.float64)
    for t in terms:
        acc = acc + t.evaluate(x[:, t.feature])
    return acc


def additive_raw_one(row: Any, intercept: float, terms: list[Term]) -> float:
    acc = intercept
    for t in terms:
        acc = acc + term_one(t, float(row[t.feature]))
    return acc


def _knots(v: np.ndarray, max_knots: int) -> np.ndarray:
    finite = v[~np.isnan(v)]
    if len(finite) == 0:
        return np.zeros(0)
    distinct = np.unique(finite)
    if len(distinct) <= max_knots:
        return distinct
    q = np.quantile(finite, np.linspace(0.0, 1.0, max_knots), method="inverted_cdf")
    return np.unique(q)


@dataclass
class _Block:
    """One feature's columns in the design: ``start`` .. ``start + size``; numeric (knots) or categorical."""

    feature: int
    name: str
    kind: str
    start: int
    size: int
    knots: np.ndarray
    has_missing: bool


def _design(x: np.ndarray, blocks: list[_Block], width: int) -> sparse.csr_matrix:
    """Hat-function basis per numeric feature (two non-zeros a row), one-hot codes, missing indicators."""
    n = x.shape[0]
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    idx = np.arange(n)
    for b in blocks:
        v = x[:, b.feature]
        nan = np.isnan(v)
        miss_col = b.start + b.size - 1 if b.has_missing else -1
        if b.has_missing and nan.any():
            rows.append(idx[nan])
            cols.append(np.full(int(nan.sum()), miss_col))
            vals.append(np.ones(int(nan.sum())))
        ok = ~nan
        if b.kind == "categorical":
            code = v[ok]
            n_cat = b.size - (1 if b.has_missing else 0)
            good = (code >= 0) & (code < n_cat)
            r = idx[ok][good]
            rows.append(r)
            cols.append(b.start + code[good].astype(np.int64))
            vals.append(np.ones(len(r)))
            continue
        knots = b.knots
        xs = v[ok]
        r = idx[ok]
        if len(knots) == 1:
            rows.append(r)
            cols.append(np.full(len(r), b.start))
            vals.append(np.ones(len(r)))
            continue
        xc = np.clip(xs, knots[0], knots[-1])
        k = np.clip(np.searchsorted(knots, xc, side="right") - 1, 0, len(knots) - 2)
        t = (xc - knots[k]) / (knots[k + 1] - knots[k])
        rows += [r, r]
        cols += [b.start + k, b.start + k + 1]
        vals += [1.0 - t, t]
    if not rows:
        return sparse.csr_matrix((n, width))
    return sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, width)
    )


def _penalty_matrix(blocks: list[_Block], width: int) -> sparse.csr_matrix:
    """``P`` with penalty ``w' P w``: first differences of neighbouring knot values, plus a small ridge."""
    diag = np.full(width, RIDGE)
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for b in blocks:
        if b.kind != "numeric":
            continue
        n_knots = len(b.knots)
        for k in range(n_knots - 1):
            i, j = b.start + k, b.start + k + 1
            rows += [i, j, i, j]
            cols += [i, j, j, i]
            vals += [1.0, 1.0, -1.0, -1.0]
    d = (
        sparse.csr_matrix((vals, (rows, cols)), shape=(width, width))
        if rows
        else sparse.csr_matrix((width, width))
    )
    return (d + sparse.diags(diag)).tocsr()


@dataclass
class Basis:
    """The design of the linear model (which features, their knots, missing columns), fixed once per action
    so every fit of it (search, cross-fit halves, backtest folds, the served model) shares one parameter
    space and warm-starts from the previous fit: several times fewer solver iterations."""

    blocks: list[_Block]
    width: int
    max_knots: int
    theta: np.ndarray | None = None

    @classmethod
    def build(
        cls, x: np.ndarray, names: list[str], categories: dict[str, list[str]], *, max_knots: int = MAX_KNOTS
    ) -> Basis:
        blocks: list[_Block] = []
        width = 0
        for j, name in enumerate(names):
            v = x[:, j]
            has_missing = bool(np.isnan(v).any())
            if name in categories:
                size = len(categories[name]) + (1 if has_missing else 0)
                if size == 0:
                    continue
                blocks.append(_Block(j, name, "categorical", width, size, np.zeros(0), has_missing))
            else:
                knots = _knots(v, max_knots)
                if len(knots) <= 1 and not has_missing:
                    continue  # constant: no information
                size = max(1, len(knots)) + (1 if has_missing else 0)
                if len(knots) == 0:
                    knots = np.zeros(1)
                blocks.append(_Block(j, name, "numeric", width, size, knots, has_missing))
            width += size
        return cls(blocks, width, max_knots)

    def fit(self, x: np.ndarray, y: np.ndarray, penalties: list[float]) -> list[AdditiveLogistic]:
        design = _design(x, self.blocks, self.width)
        pen = _penalty_matrix(self.blocks, self.width)
        yy = y.astype(np.float64)
        n = max(1, len(yy))
        out = []
        for penalty in penalties:
            w, b = _solve(design, yy, pen, penalty / n, self.theta)
            self.theta = np.append(w, b)
            out.append(AdditiveLogistic._served(x, self.blocks, w, b, penalty, self.max_knots))
        return out


def _solve(
    design: sparse.csr_matrix, y: np.ndarray, pen: sparse.csr_matrix, strength: float, w0: np.ndarray | None
) -> tuple[np.ndarray, float]:
    """Minimise mean log loss + ½·strength·w'Pw over (w, intercept) by L-BFGS (deterministic).

    Runs with one BLAS thread: the vectors are small, and OpenBLAS threads spinning against each other on a
    busy machine made this several times slower."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _lbfgs(design, y, pen, strength, w0)


def _lbfgs(
    design: sparse.csr_matrix, y: np.ndarray, pen: sparse.csr_matrix, strength: float, w0: np.ndarray | None
) -> tuple[np.ndarray, float]:
    n, width = design.shape
    dt = design.T.tocsr()
    ybar = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))

    def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:width], theta[width]
        z = design @ w + b
        # log(1 + e^z) - y z, stably
        loss = np.logaddexp(0.0, z) - y * z
        p = 1.0 / (1.0 + np.exp(-z))
        r = (p - y) / n
        pw = pen @ w
        value = float(loss.mean() + 0.5 * strength * (w @ pw))
        grad = np.empty(width + 1)
        grad[:width] = dt @ r + strength * pw
        grad[width] = r.sum()
        return value, grad

    theta0 = np.zeros(width + 1) if w0 is None else w0.copy()
    if w0 is None:
        theta0[width] = np.log(ybar / (1 - ybar))
    res = optimize.minimize(
        f, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 250, "ftol": 1e-8, "gtol": 1e-5}
    )
    return res.x[:width], float(res.x[width])


@dataclass
class AdditiveLogistic:
    """The fitted linear candidate in its served form: ``intercept + Σ terms`` (log-odds)."""

    intercept: float
    terms: list[Term]
    penalty: float = 0.0
    knots: int = MAX_KNOTS

    kind = "linear"

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        names: list[str],
        categories: dict[str, list[str]],
        *,
        penalty: float,
        max_knots: int = MAX_KNOTS,
    ) -> AdditiveLogistic:
        """Fit on ``x`` (``rows × features``, NaN missing, category codes for the ``categories`` features).

        ``penalty`` is per row: the fit minimises the summed log loss plus ``½·penalty·w'Pw``, so the same
        penalty regularises less, relatively, as rows grow (as a prior should)."""
        return cls.fit_path(x, y, names, categories, penalties=[penalty], max_knots=max_knots)[0]

    @classmethod
    def fit_path(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        names: list[str],
        categories: dict[str, list[str]],
        *,
        penalties: list[float],
        max_knots: int = MAX_KNOTS,
        basis: Basis | None = None,
    ) -> list[AdditiveLogistic]:
        """One model per penalty, each fit warm-started from the previous (give them strongest first).

        ``basis`` (knots fixed beforehand, e.g. on every row of an action) is reused and warm-starts from its
        last fit; by default the knots come from ``x``."""
        b = basis or Basis.build(x, names, categories, max_knots=max_knots)
        return b.fit(x, y, penalties)

    @classmethod
    def _served(
        cls, x: np.ndarray, blocks: list[_Block], w: np.ndarray, b: float, penalty: float, max_knots: int
    ) -> AdditiveLogistic:
        """The fitted coefficients as terms: the hat basis's coefficients are the knot values themselves."""
        terms: list[Term] = []
        for blk in blocks:
            coef = w[blk.start : blk.start + blk.size]
            if blk.kind == "categorical":
                n_cat = blk.size - (1 if blk.has_missing else 0)
                values = [float(c) for c in coef[:n_cat]]
                missing = float(coef[-1]) if blk.has_missing else 0.0
                terms.append(Term(blk.feature, blk.name, "categorical", values, missing))
                continue
            n_knots = len(blk.knots)
            values = [float(c) for c in coef[:n_knots]]
            knots = [float(k) for k in blk.knots]
            slopes = [(values[k + 1] - values[k]) / (knots[k + 1] - knots[k]) for k in range(n_knots - 1)]
            term = Term(blk.feature, blk.name, "numeric", values, 0.0, 0.0, knots, slopes)
            if blk.has_missing:
                term.missing = float(coef[-1])
            else:
                # Never missing in training: a missing input scores as the median training value does.
                col = x[:, blk.feature]
                finite = col[~np.isnan(col)]
                med = float(np.median(finite)) if len(finite) else 0.0
                term.missing = float(term.evaluate(np.array([med]))[0])
            terms.append(term)
        for t in terms:
            t.center = float(np.mean(t.evaluate(x[:, t.feature]))) if len(x) else 0.0
        return cls(float(b), terms, float(penalty), int(max_knots))

    def raw(self, x: np.ndarray) -> np.ndarray:
        return additive_raw(np.asarray(x, dtype=np.float64), self.intercept, self.terms)

    def contributions(self, x: np.ndarray, n_features: int) -> np.ndarray:
        """Per-row, per-feature contribution to the log-odds relative to the average training row
        (``rows × (n_features + 1)``; the last column is the bias: intercept plus every term's center)."""
        out = np.zeros((x.shape[0], n_features + 1))
        bias = self.intercept
        for t in self.terms:
            out[:, t.feature] += t.evaluate(x[:, t.feature]) - t.center
            bias += t.center
        out[:, n_features] = bias
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "linear",
            "intercept": self.intercept,
            "penalty": self.penalty,
            "max_knots": self.knots,
            "terms": [t.to_json() for t in self.terms],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AdditiveLogistic:
        return cls(
            float(data["intercept"]),
            [Term.from_json(t) for t in data["terms"]],
            float(data.get("penalty", 0.0)),
            int(data.get("max_knots", MAX_KNOTS)),
        )
