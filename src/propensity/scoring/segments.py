"""Segments: named tiers per action, cut from a run's own score distribution.

By default the cuts are quantiles of the run's eligible scores (top 20% ``high``, next 30% ``medium``, the rest
``low``). With ``method: auto`` (the default) the histogram is first tested for two clear modes; when it has them,
one cut moves onto the valley between them, so a mode is not split across two tiers.

The bimodality rule (deterministic, no fitting), for scores with at least 50 distinct values: a 50-bin
histogram smoothed with a 3-bin moving average; Otsu's threshold splits it in two classes; the scores are bimodal
when each class holds at least 5% of them and the lowest smoothed bin between the two classes' highest bins is at
most half the lower of those two peaks. The valley is the centre of that lowest stretch of bins; the cut that
moves onto it is the one whose quantile is nearest the share of scores below the valley.

A score equal to a cut belongs to the upper tier, so tiers are monotone: a higher score never gets a lower tier.

Online (``/v1/predict``), one score at a time, the cuts come from the same section: those of the latest scoring
run of the served bundle (:func:`run_segments`), so a score gets the tier the same score got in that run; before
any run, the section's quantiles of the bundle's test-score distribution (:func:`reference_segments`).

>>> import numpy as np
>>> from propensity.config.decisions import SegmentSettings
>>> seg = find_segments(np.linspace(0.0, 1.0, 101), SegmentSettings())
>>> [round(c, 2) for c in seg.cuts], seg.names
([0.5, 0.8], ('low', 'medium', 'high'))
>>> assign(np.array([0.1, 0.5, 0.95]), seg).tolist()
['low', 'medium', 'high']
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from propensity.config.decisions import SegmentSettings

if TYPE_CHECKING:
    from propensity.scoring.score_store import ScoringRun

BINS = 50
MIN_CLASS_SHARE = 0.05
VALLEY_DEPTH = 0.5


@dataclass(frozen=True)
class Segmentation:
    """``cuts`` ascending; ``names`` from the lowest tier to the highest (one more than cuts); ``method`` is
    ``quantile`` or ``valley`` (a cut moved onto the valley of a bimodal histogram, at ``valley``)."""

    cuts: tuple[float, ...]
    names: tuple[str, ...]
    method: str = "quantile"
    valley: float | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "cuts": list(self.cuts),
            "names": list(self.names),
            "method": self.method,
            "valley": self.valley,
        }


def find_valley(scores: np.ndarray) -> float | None:
    """The score at the valley between two clear modes of ``scores``, or None when it is not bimodal."""
    x = np.asarray(scores, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0 or np.unique(x).size < BINS:
        return None  # a few distinct values (e.g. tiered fallback scores): every gap looks like a valley
    hist, edges = np.histogram(x, bins=BINS)
    smooth = np.convolve(hist.astype(np.float64), np.ones(3) / 3.0, mode="same")
    centres = (edges[:-1] + edges[1:]) / 2.0
    # Otsu: the split maximising the between-class variance.
    w = hist.astype(np.float64)
    total = w.sum()
    w0 = np.cumsum(w)[:-1]
    w1 = total - w0
    m = np.cumsum(w * centres)[:-1]
    mu_total = (w * centres).sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu_total * w0 - total * m) ** 2 / (w0 * w1)
    between = np.where((w0 > 0) & (w1 > 0), between, -1.0)
    k = int(np.argmax(between))  # classes: bins [0, k] and [k + 1, BINS)
    if w0[k] < MIN_CLASS_SHARE * total or w1[k] < MIN_CLASS_SHARE * total:
        return None
    left_peak = int(np.argmax(smooth[: k + 1]))
    right_peak = k + 1 + int(np.argmax(smooth[k + 1 :]))
    if right_peak - left_peak < 2:
        return None
    between_bins = smooth[left_peak + 1 : right_peak]
    low = between_bins.min()
    if low > VALLEY_DEPTH * min(smooth[left_peak], smooth[right_peak]):
        return None
    # The middle of the lowest stretch (a wide empty gap has its valley in the middle, not at an edge).
    flat = np.flatnonzero(between_bins <= low + 1e-12)
    return float(centres[left_peak + 1 + int(flat[len(flat) // 2])])


def find_segments(scores: np.ndarray, settings: SegmentSettings) -> Segmentation:
    """Cut points for one action's eligible scores (NaN ignored); see the module docstring for the rule."""
    names = tuple(reversed(settings.names))
    x = np.asarray(scores, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return Segmentation((), names)
    levels = sorted(settings.quantiles)
    cuts = [float(c) for c in np.quantile(x, levels)]
    if settings.method == "quantile" or x.size < settings.min_scores_for_valley:
        return Segmentation(tuple(cuts), names)
    valley = find_valley(x)
    if valley is None:
        return Segmentation(tuple(cuts), names)
    # Move the cut whose quantile is nearest the share of scores below the valley (nearest in rank, not value).
    below = float(np.mean(x < valley))
    j = int(np.argmin([abs(q - below) for q in levels]))
    cuts[j] = valley
    # Keep the cuts ascending: those below the moved one may not pass it, nor those above.
    cuts = [min(c, valley) if i < j else max(c, valley) if i > j else c for i, c in enumerate(cuts)]
    return Segmentation(tuple(cuts), names, "valley", valley)


def tier_index(scores: np.ndarray, segmentation: Segmentation) -> np.ndarray:
    """Each score's tier (0 = lowest); a score equal to a cut is in the upper tier."""
    return np.searchsorted(np.asarray(segmentation.cuts, dtype=np.float64), scores, side="right")


def assign(scores: np.ndarray, segmentation: Segmentation) -> np.ndarray:
    """Each score's tier name (an object array; None where the score is NaN, i.e. not eligible)."""
    x = np.asarray(scores, dtype=np.float64)
    names = np.array(segmentation.names, dtype=object)
    out = names[np.minimum(tier_index(x, segmentation), len(names) - 1)]
    out[np.isnan(x)] = None
    return out


def segment_of(score: float | None, segmentation: Segmentation) -> str | None:
    """One score's tier by the rule of :func:`assign` (None for a missing score or an empty segmentation)."""
    if score is None or math.isnan(score) or not segmentation.names:
        return None
    i = bisect.bisect_right(segmentation.cuts, score)
    return segmentation.names[min(i, len(segmentation.names) - 1)]


def reference_segments(quantiles: Sequence[float], settings: SegmentSettings) -> Segmentation:
    """The section's tiers cut at its quantiles of a reference distribution given as evenly spaced quantiles
    (a bundle's ``score_quantiles``: 101 values of its calibrated test-split scores)."""
    q = np.asarray(quantiles, dtype=np.float64)
    names = tuple(reversed(settings.names))
    if q.size == 0:
        return Segmentation((), names)
    cuts = np.interp(sorted(settings.quantiles), np.linspace(0.0, 1.0, q.size), q)
    return Segmentation(tuple(float(c) for c in cuts), names, "reference")


def run_segments(run: ScoringRun) -> dict[str, Segmentation]:
    """The cuts a scoring run used, per action it scored with a model (fallback actions are left out: their
    scores are ranks, not the model's scale)."""
    fallback = set(run.details.get("fallback_actions") or [])
    described: Mapping[str, Mapping[str, object]] = run.details.get("segments") or {}
    out = {}
    for action, cuts in run.segment_cuts.items():
        names = run.segment_names.get(action)
        if action in fallback or not names:
            continue
        method = str(described.get(action, {}).get("method", "quantile"))
        out[action] = Segmentation(tuple(cuts), tuple(names), method)
    return out
