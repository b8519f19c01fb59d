"""A bundle loaded for scoring: its actions compiled for one row (serving) or many (batch), with their encoders
and calibrators.

Loading a bundle verifies its checksums, parses every action's model and packs them all into one
:class:`~propensity.scoring.compiled.ModelSet` over the union of their features: LightGBM text models in one
:class:`~propensity.scoring.compiled.CompiledScorer` (one native call for every action), linear models and blends
beside them. Calibration and encoding are re-implemented here for one row (no numpy on
the request path) and tested against the training code's :class:`~propensity.training.calibration.Calibrator`
and :class:`~propensity.training.encoding.FeatureEncoder`.

Percentiles come from ``score_quantiles`` in an action's manifest entry (the calibrated scores' quantiles on the
test split, 101 values) when the bundle has them; otherwise they are ``None``. Segments are the project's
``segments:`` tiers (:mod:`propensity.scoring.segments`): :func:`load_model` cuts them as the latest scoring run
of the bundle did, else at the section's quantiles of the test-split scores.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from propensity.config.actions import Action
from propensity.config.decisions import SegmentSettings
from propensity.core.errors import PropensityError
from propensity.scoring.compiled import ModelSet, ModelSpec
from propensity.scoring.segments import Segmentation, reference_segments, run_segments, segment_of
from propensity.workspace import Workspace

if TYPE_CHECKING:
    from propensity.scoring.score_store import ScoringRun

log = logging.getLogger(__name__)

COMPILED_DIR = "compiled"  # a bundle's compiled scorer, beside it (not part of its checksummed files)
CALIBRATION_EPS = 1e-6  # the training calibrators clip to [EPS, 1 - EPS]
_NAN = float("nan")


@dataclass(frozen=True)
class ActionModel:
    """What serving needs of one action: its model (LightGBM text; for a ``linear`` model or a ``blend``, also
    the bundle's ``linear.json`` and the blend's weights), feature order, category vocabularies, calibrator
    (the bundle's ``calibrator.json``), eligibility rule and score quantiles (optional)."""

    name: str
    model_text: str
    feature_order: list[str]
    calibrator: dict[str, Any]
    categories: dict[str, list[str]] = field(default_factory=dict)
    eligibility: dict[str, Any] | None = None
    score_quantiles: list[float] | None = None
    # The action's full definition as trained (templates resolved), when the bundle records it.
    definition: dict[str, Any] | None = None
    kind: str = "lightgbm"  # "lightgbm" | "linear" | "blend" (the bundle's model.json)
    linear: dict[str, Any] | None = None
    weights: dict[str, float] | None = None

    def spec(self) -> ModelSpec:
        return ModelSpec(self.kind, self.model_text or None, self.linear, self.weights)

    def action(self) -> Action | None:
        """The trained action definition, parsed; None for a bundle that does not record it."""
        if not self.definition or self.definition.get("kind") == "table":
            # A labelled table's model (`train --table`) is not an event action: no horizon, no eligibility.
            return None
        return Action.model_validate(self.definition)


def calibrate(calibrator: dict[str, Any], raw: float) -> float:
    """One raw score → probability, as :class:`propensity.training.calibration.Calibrator` does for arrays."""
    method = calibrator["method"]
    if method == "platt":
        z = calibrator["a"] * raw + calibrator["b"]
        if z >= 0:
            p = 1.0 / (1.0 + math.exp(-z))
        else:
            e = math.exp(z)
            p = e / (1.0 + e)
    elif method == "isotonic":
        xs, ys = calibrator["x"], calibrator["y"]
        if raw != raw:
            p = _NAN
        elif raw <= xs[0]:
            p = ys[0]
        elif raw >= xs[-1]:
            p = ys[-1]
        else:
            j = bisect.bisect_right(xs, raw) - 1
            slope = (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j])
            p = slope * (raw - xs[j]) + ys[j]
    elif method == "identity":
        p = 1.0 / (1.0 + math.exp(-raw)) if raw >= 0 else math.exp(raw) / (1.0 + math.exp(raw))
    else:
        raise ValueError(f"unknown calibration method {method!r} (expected platt, isotonic or identity)")
    return min(max(p, CALIBRATION_EPS), 1.0 - CALIBRATION_EPS)


Exp = Callable[[np.ndarray], np.ndarray]


def libm_exp(x: np.ndarray) -> np.ndarray:
    """``exp`` by the C library, as :func:`math.exp` computes it (numpy's ``exp`` differs in the last bit for
    ~5% of values); a compiled scorer's :meth:`~propensity.scoring.compiled.CompiledScorer.exp` is the fast
    equivalent."""
    flat = np.asarray(x, dtype=np.float64).reshape(-1)
    out = np.fromiter((_math_exp(v) for v in flat.tolist()), np.float64, flat.size)
    return out.reshape(np.shape(x))


def _math_exp(v: float) -> float:
    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


def _sigmoid(z: np.ndarray, exp: Exp) -> np.ndarray:
    # The two branches of `calibrate`, so neither side overflows, and its exp: the same bits.
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + exp(-z[pos]))
    e = exp(z[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def calibrate_many(calibrator: dict[str, Any], raw: np.ndarray, exp: Exp = libm_exp) -> np.ndarray:
    """:func:`calibrate` over an array (batch scoring): the same arithmetic, vectorised, with the same ``exp``,
    so every value equals the single-row one bit for bit."""
    raw = np.asarray(raw, dtype=np.float64)
    method = calibrator["method"]
    if method == "platt":
        p = _sigmoid(calibrator["a"] * raw + calibrator["b"], exp)
    elif method == "isotonic":
        xs = np.asarray(calibrator["x"], dtype=np.float64)
        ys = np.asarray(calibrator["y"], dtype=np.float64)
        j = np.clip(np.searchsorted(xs, raw, side="right") - 1, 0, max(len(xs) - 2, 0))
        if len(xs) > 1:
            dx = xs[j + 1] - xs[j]
            slope = np.divide(ys[j + 1] - ys[j], dx, out=np.zeros_like(dx), where=dx != 0)
            p = slope * (raw - xs[j]) + ys[j]
        else:
            p = np.full_like(raw, ys[0])
        p = np.where(raw <= xs[0], ys[0], np.where(raw >= xs[-1], ys[-1], p))
        p = np.where(np.isnan(raw), np.nan, p)
    elif method == "identity":
        p = _sigmoid(raw, exp)
    else:
        raise ValueError(f"unknown calibration method {method!r} (expected platt, isotonic or identity)")
    return np.clip(p, CALIBRATION_EPS, 1.0 - CALIBRATION_EPS)


def percentile_of(quantiles: Sequence[float] | None, score: float) -> float | None:
    """The share (0–100) of the reference scores at or below ``score``, interpolated between quantiles."""
    if not quantiles:
        return None
    n = len(quantiles) - 1
    if score <= quantiles[0]:
        return 0.0
    if score >= quantiles[-1]:
        return 100.0
    j = bisect.bisect_right(quantiles, score) - 1
    lo, hi = quantiles[j], quantiles[j + 1]
    frac = 0.0 if hi == lo else (score - lo) / (hi - lo)
    return round(100.0 * (j + frac) / n, 2)


class ServingModel:
    """Every action of one bundle, compiled together. Immutable once built (hot swap replaces the object)."""

    def __init__(
        self,
        version: str,
        feature_set_version: str,
        actions: Sequence[ActionModel],
        *,
        backend: str = "auto",
        cache_dir: Path | None = None,
        segments: Mapping[str, Segmentation] | None = None,
    ) -> None:
        if not actions:
            raise ValueError("a serving model needs at least one action")
        self.version = version
        self.feature_set_version = feature_set_version
        self.actions = {a.name: a for a in actions}
        self.action_names = tuple(a.name for a in actions)
        # One input column per (feature, vocabulary): a categorical feature whose categories differ between
        # actions (each action's encoder learns them from its own training set) gets a column per vocabulary.
        keys: list[tuple[str, tuple[str, ...] | None]] = []
        col_maps: list[list[int]] = []
        for a in actions:
            positions = []
            for f in a.feature_order:
                cats = a.categories.get(f)
                key = (f, tuple(cats) if cats is not None else None)
                if key not in keys:
                    keys.append(key)
                positions.append(keys.index(key))
            col_maps.append(positions)
        self.columns = tuple(name for name, _ in keys)
        # A column's vocabulary (category → code), or None for a numeric column.
        self.column_vocab: tuple[dict[str, float] | None, ...] = tuple(
            None if cats is None else {v: float(i) for i, v in enumerate(cats)} for _, cats in keys
        )
        self.scorer = ModelSet(
            [a.spec() for a in actions],
            col_maps,
            n_columns=max(1, len(keys)),
            backend=backend,  # type: ignore[arg-type]
            cache_dir=cache_dir,
        )
        self._calibrators = [a.calibrator for a in actions]
        self._quantiles = [a.score_quantiles for a in actions]
        # Each action's tiers: as given, else the default section's cuts of its test-split scores.
        given = segments or {}
        self._segments: list[Segmentation | None] = [
            given.get(a.name)
            or (reference_segments(a.score_quantiles, SegmentSettings()) if a.score_quantiles else None)
            for a in actions
        ]

    # ----------------------------------------------------------------------------------------------- build
    @classmethod
    def from_bundle_dir(
        cls,
        path: Path,
        *,
        backend: str = "auto",
        segments: SegmentSettings | None = None,
        run: ScoringRun | None = None,
    ) -> ServingModel:
        """Load a bundle folder after verifying its checksums (see :mod:`propensity.registry.bundle`). Its
        models are compiled once and kept beside it, in ``compiled/`` (the first load of a bundle not compiled
        at promotion compiles it: seconds, never per request).

        Segments: the cuts of ``run`` (a scoring run of this bundle, cut with the section's tier names) for the
        actions it scored with the model, else ``segments`` (the project's section, default tiers when None) at
        its quantiles of each action's test-split scores."""
        from propensity.registry.bundle import verify_bundle

        manifest = verify_bundle(path)
        actions = []
        for name, info in sorted(manifest.actions.items()):
            d = path / name
            encoder = json.loads((d / "encoder.json").read_text(encoding="utf-8"))
            definition = info.definition or {}
            rules = definition.get("eligibility") if isinstance(definition, dict) else None
            # A stored definition lists every rule, unset ones as null: only set rules make a condition.
            eligibility = (
                {k: v for k, v in rules.items() if v is not None} if isinstance(rules, dict) else None
            )
            spec = (
                json.loads((d / "model.json").read_text(encoding="utf-8"))
                if (d / "model.json").exists()
                else {}
            )
            kind = spec.get("kind", "lightgbm")
            actions.append(
                ActionModel(
                    name=name,
                    model_text=(d / "model.txt").read_text(encoding="utf-8")
                    if (d / "model.txt").exists()
                    else "",
                    kind=kind,
                    linear=json.loads((d / "linear.json").read_text(encoding="utf-8"))
                    if kind in ("linear", "blend")
                    else None,
                    weights=spec.get("weights"),
                    feature_order=list(encoder["names"]),
                    categories={k: list(v) for k, v in encoder.get("categories", {}).items()},
                    calibrator=json.loads((d / "calibrator.json").read_text(encoding="utf-8")),
                    eligibility=eligibility or None,
                    score_quantiles=info.score_quantiles,
                    definition=definition or None,
                )
            )
        settings = segments or SegmentSettings()
        cuts = {a.name: reference_segments(a.score_quantiles, settings) for a in actions if a.score_quantiles}
        if run is not None and run.model_version == manifest.id:
            # A run cut with other tier names predates the current section: its cuts do not apply.
            names = tuple(reversed(settings.names))
            cuts.update({a: s for a, s in run_segments(run).items() if s.names == names})
        return cls(
            manifest.id,
            manifest.feature_set_version,
            actions,
            backend=backend,
            cache_dir=path / COMPILED_DIR,
            segments=cuts,
        )

    def encoder_for(self, feature_names: Sequence[str]) -> RowEncoder:
        """How to turn a store vector (in ``feature_names`` order) into this model's input row."""
        return RowEncoder(self, feature_names)

    # ----------------------------------------------------------------------------------------------- score
    def probabilities(self, row: Sequence[float]) -> list[float]:
        """Calibrated probabilities of every action (``action_names`` order) for one encoded row."""
        raw = self.scorer.raw_one(row)
        return [calibrate(c, r) for c, r in zip(self._calibrators, raw, strict=True)]

    def probabilities_many(self, rows: np.ndarray, *, threads: int = 1) -> np.ndarray:
        """:meth:`probabilities` of many encoded rows (``rows × action_names``), equal to it bit for bit;
        ``threads`` splits the rows between that many threads."""
        raw = self.scorer.raw(rows, threads=threads)
        out = np.empty_like(raw)
        for m, c in enumerate(self._calibrators):
            out[:, m] = calibrate_many(c, raw[:, m], self.scorer.exp)
        return out

    def reason_codes(
        self, row: Sequence[float], action_indices: Sequence[int], top: int = 3
    ) -> list[list[dict[str, Any]]]:
        """The ``top`` features pushing each requested action's score up or down, for one encoded row.

        Path attributions in log-odds (see :meth:`CompiledScorer.contributions_one`), largest magnitude first;
        features that did not move the score are left out. Milliseconds: only with ``explain=true``.
        """
        contrib = self.scorer.contributions_one(row)
        out = []
        for m in action_indices:
            feats = contrib[m, :-1]
            order = np.argsort(-np.abs(feats), kind="stable")[:top]
            out.append(
                [
                    {"feature": self.columns[j], "contribution": round(float(feats[j]), 6),
                     "direction": "up" if feats[j] > 0 else "down"}
                    for j in order
                    if feats[j] != 0.0
                ]
            )  # fmt: skip
        return out

    def percentile(self, action_index: int, score: float) -> float | None:
        return percentile_of(self._quantiles[action_index], score)

    def segment(self, action_index: int, score: float) -> str | None:
        """The score's tier (see :func:`load_model`); None when the action has no segmentation."""
        segmentation = self._segments[action_index]
        return None if segmentation is None else segment_of(score, segmentation)


class RowEncoder:
    """Store vector → model input row, as :class:`propensity.training.encoding.FeatureEncoder` encodes columns:
    numbers as floats, null → NaN, booleans 0/1, text → its category code (unseen or missing → NaN)."""

    def __init__(self, model: ServingModel, feature_names: Sequence[str]) -> None:
        pos = {n: i for i, n in enumerate(feature_names)}
        self.missing = list(dict.fromkeys(c for c in model.columns if c not in pos))
        self._plan = [
            (pos.get(c, -1), vocab) for c, vocab in zip(model.columns, model.column_vocab, strict=True)
        ]
        if not self._plan:
            self._plan = [(-1, None)]

    def encode(self, vector: Sequence[Any]) -> list[float]:
        out = []
        for src, vocab in self._plan:
            v = vector[src] if src >= 0 else None
            if vocab is not None:
                out.append(_NAN if v is None else vocab.get(str(v), _NAN))
            elif v is None:
                out.append(_NAN)
            elif isinstance(v, bool):
                out.append(1.0 if v else 0.0)
            else:
                try:
                    out.append(float(v))
                except (TypeError, ValueError):
                    out.append(_NAN)
        return out


def load_model(workspace: Workspace, path: Path, *, backend: str = "auto") -> ServingModel:
    """The workspace's bundle at ``path`` loaded for scoring, with the project's ``segments:`` section: cut as
    the latest scoring run did when that run scored this bundle (an online score then gets the tier the same
    score got in batch), else at the section's quantiles of the bundle's test-split scores."""
    from duckdb import Error as DuckDBError

    from propensity.scoring.score_store import open_score_store

    run = None
    try:
        latest = open_score_store(workspace).latest_run()
        run = latest if latest is not None and latest.model_version == path.name else None
    except (PropensityError, DuckDBError, OSError) as exc:
        log.warning("segments of %s: the score store could not be read (%s); cutting at the project's "
                    "quantiles of the test-split scores", path.name, exc)  # fmt: skip
    return ServingModel.from_bundle_dir(path, backend=backend, segments=workspace.spec.segments, run=run)
