"""Distribution comparisons shared by monitors and activation gates: PSI and the two-sample KS statistic.

PSI (population stability index) = Σ (a − e) · ln(a / e) over bins, where e and a are the reference's and the
current sample's shares per bin. Bins are the reference's quantiles, so each holds about the same share of the
reference; an empty bin share is floored at ``EPSILON`` so the log stays finite. Common reading: < 0.1 stable,
0.1–0.25 a moderate shift, > 0.25 a major shift.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ref = rng.normal(size=20_000)
>>> psi(ref, rng.normal(size=20_000)) < 0.01
True
>>> psi(ref, rng.normal(1.0, 1.0, size=20_000)) > 0.25
True
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

EPSILON = 1e-4


def quantile_edges(reference: npt.ArrayLike, bins: int = 10) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (duplicates removed, so heavy ties make fewer bins)."""
    ref = np.asarray(reference, dtype=np.float64)
    ref = ref[np.isfinite(ref)]
    if ref.size == 0:
        return np.array([], dtype=np.float64)
    return np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))


def bin_shares(values: npt.ArrayLike, edges: np.ndarray) -> np.ndarray:
    """Share of the finite values in each bin defined by ``edges`` (len(edges) + 1 bins)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    counts = np.bincount(np.searchsorted(edges, v, side="right"), minlength=len(edges) + 1)
    total = counts.sum()
    return counts / total if total else np.zeros(len(edges) + 1)


def psi_from_shares(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.maximum(np.asarray(expected, dtype=np.float64), EPSILON)
    a = np.maximum(np.asarray(actual, dtype=np.float64), EPSILON)
    return float(np.sum((a - e) * np.log(a / e)))


def psi(reference: npt.ArrayLike, current: npt.ArrayLike, bins: int = 10) -> float:
    """PSI of ``current`` against ``reference`` on the reference's quantile bins."""
    edges = quantile_edges(reference, bins)
    return psi_from_shares(bin_shares(reference, edges), bin_shares(current, edges))


def ks_statistic(reference: npt.ArrayLike, current: npt.ArrayLike) -> float:
    """The two-sample Kolmogorov–Smirnov statistic: the largest gap between the two empirical CDFs."""
    a = np.sort(np.asarray(reference, dtype=np.float64)[np.isfinite(reference)])
    b = np.sort(np.asarray(current, dtype=np.float64)[np.isfinite(current)])
    if a.size == 0 or b.size == 0:
        return 0.0
    grid = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, grid, side="right") / a.size
    cdf_b = np.searchsorted(b, grid, side="right") / b.size
    return float(np.max(np.abs(cdf_a - cdf_b)))
