"""Fit one action: search, choose the champion, evaluate the procedure in time, then refit on all matured rows.

The procedure, in the order it runs (DESIGN.md, "Evaluate, then refit"):

1. **Search** (:mod:`propensity.training.candidates`) on the training split: each candidate kind's settings
   (the linear model's penalty; LightGBM's leaves, leaf size, L2 and rounds by early stopping), validated on
   the training split's newest cutoffs.
2. **Champion**: each candidate (linear, LightGBM and blends of the two) is fitted on the training split and
   calibrated on the calibration split by a cross-fit; the lowest log loss there wins, whatever its kind, and
   so does the calibration method (identity, Platt or isotonic).
3. **Refit procedure** at an origin T: the champion is fitted on every row whose label had matured by T, and
   calibrated on the newest matured window through a two-fold cross-fit by customer (each half's scores come
   from a model fitted without that half), so the calibrator sees the newest behaviour without the model
   having been fitted on the rows it calibrates on. The served model is this procedure at the data's end.
4. **Backtest**: the same procedure at rolling origins, each evaluated on the cutoffs that follow it; the last
   origin is the test split's first cutoff, and its figures are the report's test metrics, so they describe
   what is served. A plain logistic regression (:class:`~propensity.training.trainers.LogisticBaseline`) is
   fitted on the same rows as the reference.

The time split is verified again here (no model is fitted on a leaky split) and an action with too few positives
or negatives is refused with its counts. Large sets are searched and cross-fitted on samples of whole customers
(``SEARCH_ROWS``, ``CROSS_FIT_ROWS``); the served model itself is fitted on every row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from propensity.config.training import TrainingSettings
from propensity.training.calibration import Calibrator, choose_calibrator
from propensity.training.candidates import (
    LINEAR_ROWS,
    SearchResult,
    customer_hash,
    log_loss,
    remembered_hashes,
    sample_rows,
    search,
)
from propensity.training.dataset import TrainingSet
from propensity.training.encoding import FeatureEncoder
from propensity.training.explain import importance, reason_codes
from propensity.training.linear import AdditiveLogistic, Basis
from propensity.training.metrics import evaluate, headline
from propensity.training.splits import InsufficientDataError, verify_no_overlap
from propensity.training.trainers import LightGBMModel, LogisticBaseline, ServedModel, lightgbm_params

BLEND_WEIGHTS = (0.25, 0.5, 0.75)  # the linear model's share in a blend's log-odds
CROSS_FIT_ROWS = 250_000  # each cross-fit half is fitted on at most this many rows (whole customers)
BACKTEST_ROWS = (
    250_000  # the test fold's model (what the test metrics score) is fitted on at most this many rows
)
FOLD_ROWS = 60_000  # the earlier backtest folds' models, on at most this many (their halves on half of it)
BLEND_MARGIN = 0.001  # a blend (two models to fit and serve) must beat the best single kind by this share
BASELINE_ROWS = 100_000  # the plain logistic regression is fitted on at most this many rows
MIN_WINDOW_CLASS = 30  # a calibration window grows back in time until it has this many of each class
MIN_FOLD_CLASS = 10


@dataclass
class ScoredModel:
    """A raw model plus its calibrator. ``kind`` is ``linear``, ``lightgbm``, ``blend`` or ``baseline``."""

    kind: str
    model: ServedModel | LogisticBaseline
    calibrator: Calibrator

    def raw(self, x: np.ndarray, encoder: FeatureEncoder) -> np.ndarray:
        if isinstance(self.model, LogisticBaseline):
            return self.model.raw(x, encoder)
        return self.model.raw(x)

    def predict(self, x: np.ndarray, encoder: FeatureEncoder) -> np.ndarray:
        return self.calibrator(self.raw(x, encoder))


@dataclass
class Recipe:
    """How the champion is fitted on any rows: its kind and the settings the search chose."""

    kind: str
    penalty: float | None = None
    lightgbm: dict[str, Any] | None = None
    rounds: int | None = None
    search_rows: int = 0
    weights: dict[str, float] | None = None
    basis: Basis | None = field(default=None, repr=False)  # the linear model's knots, shared by every fit

    def rounds_for(self, rows: int) -> int:
        """Early stopping found ``rounds`` on ``search_rows`` rows; more rows support a few more trees."""
        assert self.rounds is not None
        scale = (max(rows, 1) / max(self.search_rows, 1)) ** 0.25
        return max(1, min(2 * self.rounds, round(self.rounds * min(scale, 2.0))))

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        encoder: FeatureEncoder,
        *,
        seed: int,
        threads: int = 0,
        customers: np.ndarray | None = None,
    ) -> ServedModel:
        """Fit on the rows given; the linear part on at most ``LINEAR_ROWS`` of them (whole ``customers``)."""
        lin = gbm = None
        if self.kind in ("linear", "blend"):
            assert self.penalty is not None
            keep = np.ones(len(y), dtype=bool)
            if customers is not None:
                keep = sample_rows(keep, customers, LINEAR_ROWS, seed + 5)
            lin = AdditiveLogistic.fit_path(
                x[keep],
                y[keep],
                encoder.names,
                encoder.categories,
                penalties=[self.penalty],
                basis=self.basis,
            )[0]
        if self.kind in ("lightgbm", "blend"):
            assert self.lightgbm is not None
            params = lightgbm_params(self.lightgbm, seed=seed, rows=len(y), threads=threads)
            gbm, _, _ = LightGBMModel.train(x, y, encoder, params, rounds=self.rounds_for(len(y)))
        return ServedModel(self.kind, lin, gbm, self.weights)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "penalty": self.penalty,
            "lightgbm": self.lightgbm,
            "rounds": self.rounds,
            "search_rows": self.search_rows,
            "weights": self.weights,
        }


@dataclass
class ActionResult:
    """One action's served model, its evaluation and everything the bundle and the report record."""

    action: str
    encoder: FeatureEncoder
    model: ScoredModel  # served: the champion refitted on every matured row
    baseline: ScoredModel  # a plain logistic regression on the same rows
    evaluation: (
        ScoredModel  # the refit procedure at the test split's first cutoff (what the test metrics score)
    )
    metrics: dict[str, Any]  # {"model": {...}, "baseline": {...}} on the test split
    importance: list[dict[str, Any]]
    reason_code_examples: list[dict[str, Any]]
    counts: dict[str, dict[str, int]]
    calibration_choice: dict[str, Any]
    candidates: list[dict[str, Any]] = field(default_factory=list)
    champion: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)
    backtest: dict[str, Any] = field(default_factory=dict)
    stages: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    test_predictions: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ helpers
def _stage(mask: np.ndarray, y: np.ndarray, as_of: np.ndarray, cutoffs: np.ndarray) -> dict[str, Any]:
    """Rows, positives, grid cutoffs and the first/last ``as_of`` of the rows in ``mask`` (what a stage used).

    A triggered row (scored at its own time) counts for the grid cutoff at or before it."""
    n = int(mask.sum())
    out: dict[str, Any] = {"rows": n, "positives": int(y[mask].sum())}
    if n:
        out["cutoffs"] = len(np.unique(np.searchsorted(cutoffs, as_of[mask], side="right")))
        out["first_as_of"] = _iso(as_of[mask].min())
        out["last_as_of"] = _iso(as_of[mask].max())
    return out


def _iso(t: Any) -> str:
    if isinstance(t, np.datetime64):
        return str(np.datetime_as_string(t, unit="s")) + "+00:00"
    return t.isoformat() if hasattr(t, "isoformat") else str(t)


def _enough(y: np.ndarray, mask: np.ndarray, k: int) -> bool:
    pos = float(y[mask].sum())
    return pos >= k and mask.sum() - pos >= k


def _window(
    fit: np.ndarray, as_of: np.ndarray, y: np.ndarray, cutoffs: np.ndarray, n_cutoffs: int
) -> np.ndarray:
    """The newest matured window of the rows in ``fit``: their last ``n_cutoffs`` grid cutoffs, widened back in
    time until it holds ``MIN_WINDOW_CLASS`` rows of each class (or all of ``fit``)."""
    if not fit.any():
        return fit
    last = as_of[fit].max()
    own = cutoffs[cutoffs <= last]
    k = max(1, n_cutoffs)
    while True:
        start = own[max(0, len(own) - k)] if len(own) else as_of[fit].min()
        w = fit & (as_of >= start)
        if _enough(y, w, MIN_WINDOW_CLASS) or k >= len(own):
            return w
        k += 1


@dataclass
class _Procedure:
    """The refit procedure's output at one origin."""

    model: ScoredModel
    fit_rows: np.ndarray
    window: np.ndarray
    calibration: dict[str, Any]


def _refit(
    recipe: Recipe,
    x: np.ndarray,
    y: np.ndarray,
    customers: np.ndarray,
    fit: np.ndarray,
    window: np.ndarray,
    encoder: FeatureEncoder,
    settings: TrainingSettings,
    *,
    cap: int | None = None,
) -> _Procedure:
    """Fit the champion on ``fit`` rows; calibrate on ``window`` through a two-fold cross-fit by customer."""
    seed = settings.seed
    threads = settings.lightgbm.threads
    rows = fit if cap is None else sample_rows(fit, customers, cap, seed + 1)
    model = recipe.fit(x[rows], y[rows], encoder, seed=seed, threads=threads, customers=customers[rows])
    half = customer_hash(customers, seed + 31) < 0.5
    oof = np.zeros(len(y))
    for side in (half, ~half):
        train = sample_rows(rows & ~side, customers, cap // 2 if cap else CROSS_FIT_ROWS, seed + 2)
        part = window & side
        if not part.any():
            continue
        if not _enough(y, train, 1):
            train = rows
        half_model = recipe.fit(
            x[train], y[train], encoder, seed=seed, threads=threads, customers=customers[train]
        )
        oof[part] = half_model.raw(x[part])
    cal, scores = choose_calibrator(oof[window], y[window], method=settings.calibration, seed=seed)
    info = {"method": cal.method, "cross_fit_log_loss": scores}
    return _Procedure(ScoredModel(recipe.kind, model, cal), rows, window, info)


def _baseline(
    x: np.ndarray,
    y: np.ndarray,
    rows: np.ndarray,
    encoder: FeatureEncoder,
    customers: np.ndarray,
    seed: int,
    cap: int = BASELINE_ROWS,
) -> ScoredModel:
    """A plain logistic regression on the same rows (its own log-odds, no calibrator: as a user would), on at
    most ``cap`` of them (whole customers)."""
    fit = sample_rows(rows, customers, cap, seed + 3)
    return ScoredModel("baseline", LogisticBaseline.fit(x[fit], y[fit], encoder), Calibrator("identity", {}))


def _examples(
    model: ServedModel, x: np.ndarray, names: list[str], p: np.ndarray, y: np.ndarray, k: int = 3
) -> list[dict[str, Any]]:
    """Reason codes of the ``k`` highest and ``k`` lowest test scores (no customer ids), for the report."""
    order = np.argsort(-p, kind="stable")
    idx = [int(i) for i in (*order[:k], *order[-k:])]
    codes = reason_codes(model, x[idx], names, top=3)
    return [{"score": float(p[i]), "label": int(y[i]), "reasons": c} for i, c in zip(idx, codes, strict=True)]


# ------------------------------------------------------------------------------------------------ champion
def _recipes(found: SearchResult, kinds: list[str], basis: Basis | None) -> dict[str, Recipe]:
    out: dict[str, Recipe] = {}
    rows = int(found.validation.get("fit_rows", 0))
    if "linear" in found.best:
        penalty = float(found.best["linear"].config["penalty"])
        out["linear"] = Recipe("linear", penalty=penalty, search_rows=rows, basis=basis)
    if "lightgbm" in found.best:
        t = found.best["lightgbm"]
        out["lightgbm"] = Recipe("lightgbm", lightgbm=dict(t.config), rounds=t.rounds, search_rows=rows)
    if "blend" in kinds and "linear" in out and "lightgbm" in out:
        for w in BLEND_WEIGHTS:
            out[f"blend:{w}"] = Recipe(
                "blend",
                penalty=out["linear"].penalty,
                lightgbm=out["lightgbm"].lightgbm,
                rounds=out["lightgbm"].rounds,
                search_rows=rows,
                weights={"linear": w, "lightgbm": 1.0 - w},
                basis=basis,
            )
    return out


@dataclass
class _BaselineRaw:
    model: ScoredModel
    encoder: FeatureEncoder

    def raw(self, x: np.ndarray) -> np.ndarray:
        return self.model.raw(x, self.encoder)


def _choose_champion(
    recipes: dict[str, Recipe],
    bases: dict[str, Recipe],
    x: np.ndarray,
    y: np.ndarray,
    customers: np.ndarray,
    train: np.ndarray,
    cal: np.ndarray,
    encoder: FeatureEncoder,
    settings: TrainingSettings,
    *,
    cross_fit: bool = False,
) -> tuple[str, list[dict[str, Any]], float]:
    """Fit each kind on ``train``, calibrate each candidate on ``cal`` by a cross-fit, and keep the lowest log
    loss (blends reuse the linear and LightGBM fits).

    ``cross_fit`` (a training split too thin to fit on): ``train`` is every row matured by the test split,
    ``cal`` among them, and ``cal``'s scores come from two models fitted on the other half of the customers."""
    raws: dict[str, np.ndarray] = {}
    rows = sample_rows(train, customers, BACKTEST_ROWS, settings.seed + 4)
    half = customer_hash(customers, settings.seed + 31) < 0.5
    base_kinds = {
        k for r in recipes.values() for k in (("linear", "lightgbm") if r.kind == "blend" else (r.kind,))
    }

    def scores_on_cal(fit: Any) -> np.ndarray:
        if not cross_fit:
            return np.asarray(fit(rows).raw(x[cal]))
        out = np.zeros(len(y))
        for side in (half, ~half):
            out[cal & side] = fit(rows & ~side).raw(x[cal & side])
        return out[cal]

    for kind in ("linear", "lightgbm"):
        if kind in base_kinds:
            recipe = bases[kind]

            def fit(r: np.ndarray, recipe: Recipe = recipe) -> ServedModel:
                return recipe.fit(x[r], y[r], encoder, seed=settings.seed, threads=settings.lightgbm.threads,
                                  customers=customers[r])  # fmt: skip

            raws[kind] = scores_on_cal(fit)
    table: list[dict[str, Any]] = []
    yc = y[cal]
    for name, r in recipes.items():
        if r.kind == "blend":
            assert r.weights is not None
            raw = r.weights["linear"] * raws["linear"] + r.weights["lightgbm"] * raws["lightgbm"]
        else:
            raw = raws[r.kind]
        calib, scores = choose_calibrator(raw, yc, method=settings.calibration, seed=settings.seed)
        loss = min(scores.values()) if scores else log_loss(calib(raw), yc)
        figures = headline(evaluate(calib(raw), yc))
        table.append({"candidate": name, **r.to_json(), "calibration": calib.method,
                      "calibration_log_loss": loss, "calibration_split": figures})  # fmt: skip
    order = {"linear": 0, "lightgbm": 1, "blend": 2}

    singles = any(e["kind"] != "blend" for e in table)

    def rank(e: dict[str, Any]) -> tuple[float, int, str]:
        # A blend costs two models to fit and serve: it must win by BLEND_MARGIN, not by noise.
        factor = 1.0 + BLEND_MARGIN if e["kind"] == "blend" and singles else 1.0
        return (round(e["calibration_log_loss"] * factor, 9), order[e["kind"]], e["candidate"])

    best = min(table, key=rank)
    for e in table:
        e["champion"] = e is best
    # The plain logistic regression under the same protocol: a reference, not a candidate.
    base = scores_on_cal(
        lambda r: _BaselineRaw(
            _baseline(x, y, r, encoder, customers, settings.seed, cap=BASELINE_ROWS // 2), encoder
        )
    )
    _, base_scores = choose_calibrator(base, yc, method=settings.calibration, seed=settings.seed)
    reference = min(base_scores.values()) if base_scores else float("nan")
    return str(best["candidate"]), table, reference


# ------------------------------------------------------------------------------------------------ fit
def fit_action(ts: TrainingSet, settings: TrainingSettings) -> ActionResult:
    """Search, champion, backtest, refit (module docstring) for one action's training set.

    BLAS runs on one thread here: every matrix is small, and OpenBLAS threads spinning against each other (or
    against LightGBM's) on a busy machine made the solvers several times slower."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"), remembered_hashes():
        return _fit_action(ts, settings)


def _fit_action(ts: TrainingSet, settings: TrainingSettings) -> ActionResult:
    name = ts.action.name
    verify_no_overlap(ts.table, action=name)
    _check_counts(ts, settings)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    table = ts.table
    split = np.asarray(table.column("split").to_pylist(), dtype=object)
    as_of = table.column("as_of").to_numpy()
    label_end = table.column("label_end").to_numpy()
    y = table.column("label").to_numpy().astype(np.float64)
    customers = np.asarray(table.column("customer_id").to_pylist(), dtype=object)
    cutoffs = np.asarray(sorted({np.datetime64(c.replace(tzinfo=None), "us") for c in ts.cutoffs}))
    test_start = np.datetime64(ts.boundaries.test_start.replace(tzinfo=None), "us")
    cal_start = np.datetime64(ts.boundaries.calibration_start.replace(tzinfo=None), "us")
    train, cal, test = split == "train", split == "calibration", split == "test"
    # Every row whose label had matured by the test split's first cutoff: what the test fold is fitted on.
    before_test = (label_end <= test_start) & (as_of < test_start)
    thin = not _enough_counts(y, train, settings.min_positives, settings.min_negatives)
    encoder = FeatureEncoder.fit(table, ts.feature_names)
    x = encoder.matrix(table)
    seconds["encode"] = time.perf_counter() - t0
    models = settings.models

    # 1. search, on the training split
    t1 = time.perf_counter()
    kinds = tuple(k for k in ("linear", "lightgbm") if k in models.candidates or "blend" in models.candidates)
    basis = Basis.build(x, encoder.names, encoder.categories) if "linear" in kinds else None
    pool = before_test if thin else train
    found = search(
        x[pool], y[pool], as_of[pool], label_end[pool], customers[pool], encoder,
        seed=settings.seed, threads=settings.lightgbm.threads, kinds=kinds, cutoffs=cutoffs,
        lightgbm=settings.lightgbm, basis=basis,
    )  # fmt: skip
    seconds["search"] = time.perf_counter() - t1

    # 2. champion, on the calibration split
    t2 = time.perf_counter()
    every = _recipes(found, list(models.candidates), basis)
    recipes = {k: r for k, r in every.items() if r.kind in models.candidates}
    champion_name, candidates, base_loss = _choose_champion(
        recipes, every, x, y, customers, pool, cal, encoder, settings, cross_fit=thin
    )
    recipe = recipes[champion_name]
    seconds["champion"] = time.perf_counter() - t2

    # 3-4. the refit procedure at rolling origins; the last origin is the test split's
    t3 = time.perf_counter()
    n_cal = len(np.unique(cutoffs[(cutoffs >= cal_start) & (cutoffs < test_start)])) or 1
    n_test = len(cutoffs[cutoffs >= test_start]) or 1
    folds: list[dict[str, Any]] = []
    preds: dict[str, np.ndarray] = {}
    evaluation: _Procedure | None = None
    base_eval: ScoredModel | None = None
    i_test = int(np.searchsorted(cutoffs, test_start))
    origins = [i_test - k * n_test for k in range(max(1, models.backtest_folds))][::-1]
    for n, i in enumerate(origins):
        last = n == len(origins) - 1
        if i <= 0:
            folds.append({"origin": None, "skipped": "history too short for this fold"})
            continue
        origin = cutoffs[i]
        end = cutoffs[origins[n + 1]] if not last else None
        fit = (label_end <= origin) & (as_of < origin)
        ev = (as_of >= origin) if end is None else (as_of >= origin) & (as_of < end)
        if last:
            ev = test
        if not _enough(y, fit, MIN_FOLD_CLASS) or not _enough(y, ev, 1):
            folds.append(
                {"origin": _iso(origin), "skipped": "too few positives or negatives before or after it"}
            )
            continue
        window = cal if last else _window(fit, as_of, y, cutoffs, n_cal)
        proc = _refit(recipe, x, y, customers, fit, window, encoder, settings,
                      cap=BACKTEST_ROWS if last else FOLD_ROWS)  # fmt: skip
        p = proc.model.predict(x[ev], encoder)
        base = _baseline(x, y, proc.fit_rows, encoder, customers, settings.seed,
                         cap=BASELINE_ROWS if last else BASELINE_ROWS // 4)  # fmt: skip
        pb = base.predict(x[ev], encoder)
        fold = {
            "origin": _iso(origin),
            "model_rows": _stage(proc.fit_rows, y, as_of, cutoffs),
            "calibration_window": _stage(window, y, as_of, cutoffs),
            "calibration": proc.calibration["method"],
            "evaluated": _stage(ev, y, as_of, cutoffs),
            "model": headline(evaluate(p, y[ev])) if y[ev].min() != y[ev].max() else {},
            "baseline": headline(evaluate(pb, y[ev])) if y[ev].min() != y[ev].max() else {},
            "test_split": last,
        }
        folds.append(fold)
        if last:
            evaluation, base_eval = proc, base
            preds = {"model": p, "baseline": pb}  # on the test split (ev is test for the last fold)
    seconds["backtest"] = time.perf_counter() - t3
    assert evaluation is not None and base_eval is not None  # the test fold always has rows of both classes

    # 5. the served model: the procedure at the data's end (calibrated on the newest matured window)
    t4 = time.perf_counter()
    everything = np.ones(len(y), dtype=bool)
    newest = _window(everything, as_of, y, cutoffs, n_test)
    served = _refit(recipe, x, y, customers, everything, newest, encoder, settings)
    baseline = _baseline(x, y, everything, encoder, customers, settings.seed)
    seconds["refit"] = time.perf_counter() - t4

    t5 = time.perf_counter()
    metrics = {"model": evaluate(preds["model"], y[test]), "baseline": evaluate(preds["baseline"], y[test])}
    metrics["model"]["trees"] = (
        served.model.model.num_trees if isinstance(served.model.model, ServedModel) else 0
    )
    assert isinstance(served.model.model, ServedModel)
    imp = importance(served.model.model, x[test], encoder.names, seed=settings.seed)
    served_test = served.model.predict(x[test], encoder)
    examples = _examples(served.model.model, x[test], encoder.names, served_test, y[test])
    seconds["explain"] = time.perf_counter() - t5

    stages = {
        "search": found.validation,
        "champion": {
            "train": _stage(train, y, as_of, cutoffs),
            "calibration": _stage(cal, y, as_of, cutoffs),
            "fitted_on": _stage(pool, y, as_of, cutoffs),
            "how": "customer cross-fit (thin training split)"
            if thin
            else "time: training → calibration split",
        },
        "evaluation": {
            "model": _stage(evaluation.fit_rows, y, as_of, cutoffs),
            "calibration": _stage(evaluation.window, y, as_of, cutoffs),
            "test": _stage(test, y, as_of, cutoffs),
        },
        "served": {
            "model": _stage(served.fit_rows, y, as_of, cutoffs),
            "calibration": _stage(served.window, y, as_of, cutoffs),
            "calibration_method": served.calibration["method"],
            "cross_fit": "2 folds by customer",
        },
        "purged": _stage(split == "purged", y, as_of, cutoffs),
        "matured": _stage(everything, y, as_of, cutoffs),
    }
    warnings = _warnings(name, stages, split)
    if thin:
        tr = stages["champion"]["train"]
        warnings.append(
            f"{name}: the training split has {tr['positives']:,} positive and {tr['rows'] - tr['positives']:,} "
            f"negative row(s), too few to fit candidates on (training.min_positives / min_negatives); they were "
            "searched and compared by a cross-fit by customer over every row matured by the test split"
        )
    counts = ts.counts()
    if (split == "purged").any():
        counts["purged"] = {
            "rows": int((split == "purged").sum()),
            "positives": int(y[split == "purged"].sum()),
        }
    return ActionResult(
        action=name,
        encoder=encoder,
        model=served.model,
        baseline=baseline,
        evaluation=evaluation.model,
        metrics=metrics,
        importance=imp,
        reason_code_examples=examples,
        counts=counts,
        calibration_choice={
            "served": {
                "method": served.calibration["method"],
                "cross_fit_log_loss": served.calibration["cross_fit_log_loss"],
            },
            "evaluation": {
                "method": evaluation.calibration["method"],
                "cross_fit_log_loss": evaluation.calibration["cross_fit_log_loss"],
            },
        },
        candidates=candidates,
        champion={
            "candidate": champion_name,
            **recipe.to_json(),
            "why": _why(champion_name, candidates),
            "baseline_calibration_log_loss": base_loss,
        },
        search=found.to_json(),
        backtest={
            "folds": folds,
            "procedure": "refit on every matured row, cross-fit calibration on the newest window",
        },
        stages=stages,
        warnings=warnings,
        test_predictions={
            "model": preds["model"],
            "baseline": preds["baseline"],
            "label": y[test],
            "served": served_test,
        },
        seconds=seconds,
    )


def _enough_counts(y: np.ndarray, mask: np.ndarray, positives: int, negatives: int) -> bool:
    pos = int(y[mask].sum())
    return pos >= positives and int(mask.sum()) - pos >= negatives


def _check_counts(ts: TrainingSet, settings: TrainingSettings) -> None:
    """Refuse an action without enough matured rows of each class (``training.min_positives`` /
    ``min_negatives``) or without a tenth of that in the calibration and test splits. A thin training split is
    not refused: the served model is fitted on every matured row (see ``thin`` in :func:`_fit_action`)."""
    y = ts.table.column("label").to_numpy().astype(np.float64)
    split = np.asarray(ts.table.column("split").to_pylist(), dtype=object)
    name = ts.action.name
    checks = [("matured", np.ones(len(y), dtype=bool), settings.min_positives, settings.min_negatives)]
    for part in ("calibration", "test"):
        checks.append(
            (
                f"{part} split",
                split == part,
                max(1, settings.min_positives // 10),
                max(1, settings.min_negatives // 10),
            )
        )
    for label, mask, need_pos, need_neg in checks:
        pos = int(y[mask].sum())
        neg = int(mask.sum()) - pos
        if pos < need_pos or neg < need_neg:
            raise InsufficientDataError(
                f"{name}: too little data to learn: the {label} rows have {pos} positive and {neg} negative "
                f"row(s); they need at least {need_pos} positive and {need_neg} negative (training.min_positives / "
                "training.min_negatives for all matured rows; the calibration and test splits need a tenth of them)"
            )


def _why(champion: str, candidates: list[dict[str, Any]]) -> str:
    ranked = sorted(candidates, key=lambda e: e["calibration_log_loss"])
    if len(ranked) == 1:
        return f"{champion} was the only candidate"
    mine = next(e for e in ranked if e["candidate"] == champion)
    others = [e for e in ranked if e is not mine]
    if ranked[0] is mine:
        return (
            f"{champion}: lowest calibrated log loss on the calibration split ({mine['calibration_log_loss']:.5f}; "
            f"next {others[0]['candidate']} {others[0]['calibration_log_loss']:.5f})"
        )
    return (
        f"{champion}: lowest calibrated log loss on the calibration split among single models "
        f"({mine['calibration_log_loss']:.5f}); {ranked[0]['candidate']} ({ranked[0]['calibration_log_loss']:.5f}) "
        f"was better by less than the {BLEND_MARGIN:.1%} a blend needs to be worth two models"
    )


def _warnings(name: str, stages: dict[str, Any], split: np.ndarray) -> list[str]:
    out = []
    matured = stages["matured"]["rows"]
    trained = stages["champion"]["train"]["rows"]
    if matured and trained < matured / 2:
        out.append(
            f"{name}: the training split holds {trained:,} of {matured:,} matured rows (under half): the "
            "horizon is long for the history; the served model is refitted on all of them"
        )
    purged = stages["purged"]["rows"]
    if purged:
        out.append(
            f"{name}: {purged:,} rows purged from the evaluation splits (their label windows cross the next "
            "split); the served model's refit uses them"
        )
    return out


def split_cutoffs(ts: TrainingSet) -> dict[str, dict[str, int]]:
    """Rows, positives and grid cutoffs per split (purged included), for ``propensity train``'s summary."""
    cutoffs = np.asarray(sorted({np.datetime64(c.replace(tzinfo=None), "us") for c in ts.cutoffs}))
    as_of = ts.table.column("as_of").to_numpy()
    y = ts.table.column("label").to_numpy().astype(np.float64)
    split = np.asarray(ts.table.column("split").to_pylist(), dtype=object)
    out: dict[str, dict[str, int]] = {}
    for s in ("train", "purged", "calibration", "test"):
        st = _stage(split == s, y, as_of, cutoffs)
        out[s] = {"rows": st["rows"], "positives": st["positives"], "cutoffs": st.get("cutoffs", 0)}
    return out
