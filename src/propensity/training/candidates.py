"""The candidate models of an action and their small, time-aware hyperparameter search.

Candidates: the linear model (:class:`~propensity.training.linear.AdditiveLogistic`, one penalty strength out of
a few) and LightGBM (a handful of configurations of leaves, leaf size, L2 regularisation and learning rate, each
stopped early). The search is sized to the data: small sets get few leaves, big leaves and strong regularisation;
large ones are searched on a sample of whole customers, so the search costs about the same at any size.

Validation is in time: the newest cutoffs of the rows given are the validation slice, and the rows before it
whose label windows end by the slice's first cutoff are fitted on (a purged gap, as in the time split). When the
history is too short for that (a long horizon, few cutoffs), a slice of whole customers is held out instead, and
the search result says so. Everything is deterministic given the seed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from propensity.config.training import LightGBMSettings
from propensity.core.hashing import stable_fraction
from propensity.training.encoding import FeatureEncoder
from propensity.training.linear import Basis
from propensity.training.trainers import LightGBMModel, lightgbm_params

SEARCH_ROWS = 200_000  # the search fits on at most this many rows (whole customers), validates on half that
LINEAR_ROWS = 100_000  # the linear model (~10 coefficients a feature) is fitted on at most this many rows
VALIDATION_SHARE = 0.2
MIN_VALIDATION_POSITIVES = 20
PENALTIES = (1000.0, 300.0, 100.0, 30.0, 10.0)  # the linear model's penalty (per row), strongest first
# Tried, strongest-first beyond PENALTIES[0], only while the strongest penalty tried is the best so far: an
# optimum at the grid's edge may lie beyond it (many correlated features on a noisy target want smoother terms).
STRONGER_PENALTIES = (3000.0, 10000.0, 30000.0, 100000.0)
EPS = 1e-15


def log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, EPS, 1 - EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z, dtype=np.float64)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    e = np.exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


# salt -> customer -> number, while remembered_hashes() is entered (per thread and task: a context variable)
_remembered: ContextVar[dict[str, dict[str, float]] | None] = ContextVar("remembered_hashes", default=None)


@contextmanager
def remembered_hashes() -> Iterator[None]:
    """Inside it, :func:`customer_hash` remembers each customer's number per seed: one action's fit samples
    the same customers under the same few seeds a few dozen times."""
    token = _remembered.set(_remembered.get() or {})
    try:
        yield
    finally:
        _remembered.reset(token)


def customer_hash(customer_ids: np.ndarray | list[str], seed: int) -> np.ndarray:
    """A deterministic number in [0, 1) per customer (the same customer, the same number); each distinct
    customer is hashed once. Different seeds give independent numbers (SHA-256, not CRC-32: CRC is affine, so
    two salts' CRCs differ by a fixed XOR and nested samples by two seeds came out disjoint, e.g. empty)."""
    # Factorised by hashing (not sorting): the numbers per customer are what matter, not the order of uniq.
    codes, uniq = pd.factorize(np.asarray(customer_ids, dtype=object).astype(str), use_na_sentinel=False)
    salt = f"training|{seed}"
    keys = uniq.tolist()
    remembered = _remembered.get()
    if remembered is None:
        h = np.fromiter((stable_fraction(c, salt) for c in keys), dtype=np.float64, count=len(keys))
    else:
        known = remembered.setdefault(salt, {})
        for c in keys:
            if c not in known:
                known[c] = stable_fraction(c, salt)
        h = np.fromiter((known[c] for c in keys), dtype=np.float64, count=len(keys))
    return h[codes]


@dataclass
class Validation:
    """Which rows fit and which validate, and how the slice was chosen (``time`` or ``customers``)."""

    fit: np.ndarray
    valid: np.ndarray
    how: str
    start: Any = None  # the first validation cutoff (time slices)


def time_validation(
    as_of: np.ndarray,
    label_end: np.ndarray,
    y: np.ndarray,
    customers: np.ndarray,
    seed: int,
    cutoffs: np.ndarray | None = None,
) -> Validation:
    """The newest ~20% of cutoffs validate; earlier rows whose labels end by then fit (purged gap).

    ``cutoffs`` are the spine's grid cutoffs (default: the distinct ``as_of``; triggered rows are scored at
    their own times between grid cutoffs). Falls back to holding out 20% of customers when the time slice
    leaves no fitting rows or too few positives or negatives on either side.
    """
    grid = np.unique(as_of) if cutoffs is None else np.asarray(cutoffs)
    cutoffs = grid[(grid >= as_of.min()) & (grid <= as_of.max())] if len(as_of) else grid
    if len(cutoffs) >= 2:
        n_val = max(1, round(len(cutoffs) * VALIDATION_SHARE))
        start = cutoffs[len(cutoffs) - n_val]
        valid = as_of >= start
        fit = label_end <= start
        if _enough(y, fit) and _enough(y, valid):
            return Validation(fit, valid, "time", start)
    h = customer_hash(customers, seed + 7919)
    valid = h < VALIDATION_SHARE
    return Validation(~valid, valid, "customers")


def _enough(y: np.ndarray, mask: np.ndarray) -> bool:
    pos = float(y[mask].sum())
    return pos >= MIN_VALIDATION_POSITIVES and mask.sum() - pos >= MIN_VALIDATION_POSITIVES


def sample_rows(mask: np.ndarray, customers: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """``mask`` thinned to about ``limit`` rows by whole customers (deterministic)."""
    n = int(mask.sum())
    if n <= limit:
        return mask
    out = np.zeros(len(mask), dtype=bool)  # only the rows in mask can be kept, so only they are hashed
    out[mask] = customer_hash(np.asarray(customers, dtype=object)[mask], seed + 104729) < limit / n
    return out


def lightgbm_grid(rows: int, positives: int) -> list[dict[str, Any]]:
    """LightGBM configurations sized to the data: the rarer class sets how much a leaf may specialise."""
    rare = max(1, min(positives, rows - positives))
    leaf = max(20, min(rows // 200, 2000))
    hess = max(1e-3, min(5.0, rare / 400))  # a leaf needs some weight of both classes
    lr = 0.05 if rows < 50_000 else 0.1
    grid: list[dict[str, Any]] = [
        {"num_leaves": 4, "min_child_samples": leaf, "lambda_l2": 10.0, "learning_rate": lr},
        {"num_leaves": 8, "min_child_samples": leaf, "lambda_l2": 10.0, "learning_rate": lr},
        {"num_leaves": 16, "min_child_samples": max(20, leaf // 2), "lambda_l2": 5.0, "learning_rate": lr},
    ]
    if rare >= 2000:
        grid.append({"num_leaves": 32, "min_child_samples": max(20, leaf // 2), "lambda_l2": 1.0,
                     "learning_rate": lr})  # fmt: skip
    if rare >= 20_000:
        grid.append({"num_leaves": 64, "min_child_samples": max(20, leaf // 4), "lambda_l2": 1.0,
                     "learning_rate": lr})  # fmt: skip
    for g in grid:
        g["min_sum_hessian_in_leaf"] = hess
        g["feature_fraction"] = 0.8
    return grid


@dataclass
class Trial:
    kind: str
    config: dict[str, Any]
    valid_log_loss: float
    rounds: int | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "config": self.config,
            "valid_log_loss": self.valid_log_loss,
            "rounds": self.rounds,
        }


@dataclass
class SearchResult:
    """Every trial, the best configuration of each kind and how validation was done."""

    trials: list[Trial]
    best: dict[str, Trial]
    validation: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "validation": self.validation,
            "trials": [t.to_json() for t in self.trials],
            "best": {k: t.to_json() for k, t in self.best.items()},
        }


def search(
    x: np.ndarray,
    y: np.ndarray,
    as_of: np.ndarray,
    label_end: np.ndarray,
    customers: np.ndarray,
    encoder: FeatureEncoder,
    *,
    seed: int,
    threads: int = 0,
    kinds: tuple[str, ...] = ("linear", "lightgbm"),
    cutoffs: np.ndarray | None = None,
    lightgbm: LightGBMSettings | None = None,
    basis: Basis | None = None,
) -> SearchResult:
    """Try every configuration of each kind on a time-ordered validation slice; keep the best per kind.

    With ``lightgbm.search: false`` LightGBM's one configuration is ``lightgbm``'s (rounds still by early
    stopping)."""
    settings = lightgbm or LightGBMSettings()
    v = time_validation(as_of, label_end, y, customers, seed, cutoffs)
    fit = sample_rows(v.fit, customers, SEARCH_ROWS, seed)
    valid = sample_rows(v.valid, customers, SEARCH_ROWS // 2, seed)
    xf, yf, xv, yv = x[fit], y[fit], x[valid], y[valid]
    trials: list[Trial] = []
    if "linear" in kinds:
        lf = sample_rows(fit, customers, LINEAR_ROWS // 2, seed)
        path_basis = basis or Basis.build(x[lf], encoder.names, encoder.categories)
        # Strongest penalty first, each fit warm-started; the path stops once validation gets worse.
        for penalty in PENALTIES:
            t0 = time.perf_counter()
            model = path_basis.fit(x[lf], y[lf], [penalty])[0]
            loss = log_loss(sigmoid(model.raw(xv)), yv)
            trials.append(Trial("linear", {"penalty": penalty}, loss, None, time.perf_counter() - t0))
            if loss > min(t.valid_log_loss for t in trials if t.kind == "linear"):
                break
        for penalty in STRONGER_PENALTIES:
            linear = [t for t in trials if t.kind == "linear"]
            best_linear = min(linear, key=lambda t: t.valid_log_loss)
            if best_linear.config["penalty"] != max(t.config["penalty"] for t in linear):
                break
            t0 = time.perf_counter()
            model = path_basis.fit(x[lf], y[lf], [penalty])[0]
            loss = log_loss(sigmoid(model.raw(xv)), yv)
            trials.append(Trial("linear", {"penalty": penalty}, loss, None, time.perf_counter() - t0))
    if "lightgbm" in kinds:
        grid = lightgbm_grid(len(yf), int(yf.sum()))
        if not settings.search:
            grid = [{"learning_rate": settings.learning_rate, "num_leaves": settings.num_leaves,
                     "min_child_samples": settings.min_child_samples}]  # fmt: skip
        data = LightGBMModel.datasets(xf, yf, encoder, (xv, yv))
        for config in grid:  # simplest first; stop once a bigger tree does worse than the best so far
            if len([t for t in trials if t.kind == "lightgbm"]) >= 2 and trials[-1].valid_log_loss > min(
                t.valid_log_loss for t in trials if t.kind == "lightgbm"
            ):
                break
            t0 = time.perf_counter()
            params = lightgbm_params(config, seed=seed, rows=len(yf), threads=threads)
            stop = (
                settings.early_stopping_rounds
                if config["learning_rate"] <= 0.05
                else max(10, settings.early_stopping_rounds * 3 // 5)
            )
            _, rounds, valid_loss = LightGBMModel.train(
                xf,
                yf,
                encoder,
                params,
                rounds=settings.max_rounds,
                valid=(xv, yv),
                stopping=stop,
                datasets=data,
            )
            trials.append(
                Trial("lightgbm", config, float(valid_loss or 0.0), rounds, time.perf_counter() - t0)
            )
    best: dict[str, Trial] = {}
    for t in trials:
        if t.kind not in best or t.valid_log_loss < best[t.kind].valid_log_loss:
            best[t.kind] = t
    info = {
        "how": v.how,
        "start": None if v.start is None else str(v.start),
        "fit_rows": int(fit.sum()),
        "fit_positives": int(yf.sum()),
        "valid_rows": int(valid.sum()),
        "valid_positives": int(yv.sum()),
    }
    return SearchResult(trials, best, info)
