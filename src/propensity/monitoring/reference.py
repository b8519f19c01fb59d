"""Per-feature reference distributions: what a feature looked like when the model was trained.

A :class:`FeatureSummary` holds, for one feature, its bins (the reference's quantile edges for numbers, its most
common values for categories) with the reference's share in each, its null and zero rates, and for continuous
features a bounded sorted sample for the KS statistic. Summaries are small JSON, so a reference is computed
once and kept (``.propensity/monitoring/references/``); :func:`compare_feature` measures a current sample
against it.

>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> ref = summarise("amount", rng.gamma(2.0, 20.0, size=5000))
>>> cmp = compare_feature(ref, rng.gamma(2.0, 20.0, size=5000))
>>> cmp.psi < 0.02, compare_feature(ref, 3 * rng.gamma(2.0, 20.0, size=5000)).psi > 0.25
(True, True)
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from propensity.core.stats import bin_shares, ks_statistic, psi_from_shares, quantile_edges

MAX_CATEGORIES = 20
KS_SAMPLE = 2000
CONTINUOUS_MIN_DISTINCT = 20
OTHER = "(other)"


@dataclass
class FeatureSummary:
    """One feature's reference: bins and shares, null and zero rates, and a sample for KS."""

    name: str
    kind: Literal["numeric", "categorical"]
    n: int
    null_rate: float
    zero_rate: float | None
    edges: list[float]
    categories: list[str]
    shares: list[float]
    continuous: bool
    sample: list[float]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeatureSummary:
        return cls(**data)


@dataclass
class FeatureComparison:
    """A current sample measured against a :class:`FeatureSummary`."""

    n: int
    n_finite: int
    null_rate: float
    zero_rate: float | None
    shares: list[float]
    psi: float
    ks: float | None

    @property
    def measured(self) -> bool:
        """Whether any non-null value was there to compare (an all-null feature is the null-rate monitor's)."""
        return self.n_finite > 0


def _values(column: Any) -> tuple[np.ndarray | list[Any], bool]:
    """The column as numbers (NaN for null) when numeric or boolean, else as a list of strings/None."""
    if isinstance(column, pa.ChunkedArray | pa.Array):
        t = column.type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            arr = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
            return np.asarray(arr, dtype=np.float64), True
        return [None if v is None else str(v) for v in column.to_pylist()], False
    arr = np.asarray(column)
    if arr.dtype.kind in "iufb":
        return arr.astype(np.float64), True
    return [None if v is None else str(v) for v in arr.tolist()], False


def summarise(name: str, column: Any, *, bins: int = 10, seed: int = 0) -> FeatureSummary:
    """The reference summary of one feature's values (Arrow column, NumPy array or sequence)."""
    values, numeric = _values(column)
    n = len(values)
    if numeric:
        v = np.asarray(values, dtype=np.float64)
        finite = v[np.isfinite(v)]
        edges = quantile_edges(finite, bins)
        continuous = len(np.unique(finite)) >= CONTINUOUS_MIN_DISTINCT and not np.all(
            finite == np.round(finite)
        )
        sample = finite
        if continuous and len(finite) > KS_SAMPLE:
            sample = np.random.default_rng(seed).choice(finite, KS_SAMPLE, replace=False)
        return FeatureSummary(
            name=name,
            kind="numeric",
            n=n,
            null_rate=float(1 - len(finite) / n) if n else 0.0,
            zero_rate=float(np.mean(finite == 0)) if len(finite) else 0.0,
            edges=edges.tolist(),
            categories=[],
            shares=bin_shares(finite, edges).tolist(),
            continuous=bool(continuous),
            sample=sorted(sample.tolist()) if continuous else [],
        )
    present = [v for v in values if v is not None]
    common = [c for c, _ in Counter(present).most_common(MAX_CATEGORIES)]
    return FeatureSummary(
        name=name,
        kind="categorical",
        n=n,
        null_rate=float(1 - len(present) / n) if n else 0.0,
        zero_rate=None,
        edges=[],
        categories=common,
        shares=_category_shares(present, common),
        continuous=False,
        sample=[],
    )


def _category_shares(present: Sequence[str], categories: list[str]) -> list[float]:
    counts = Counter(v if v in categories else OTHER for v in present)
    total = len(present) or 1
    return [counts.get(c, 0) / total for c in [*categories, OTHER]]


def compare_feature(summary: FeatureSummary, current: Any) -> FeatureComparison:
    """PSI (and KS for continuous features), null and zero rates of ``current`` against ``summary``."""
    values, numeric = _values(current)
    n = len(values)
    if summary.kind == "numeric":
        v = np.asarray(values, dtype=np.float64) if numeric else _as_numbers(list(values))
        finite = v[np.isfinite(v)]
        shares = bin_shares(finite, np.asarray(summary.edges, dtype=np.float64))
        psi = psi_from_shares(np.asarray(summary.shares), shares) if len(finite) else float("nan")
        ks = ks_statistic(np.asarray(summary.sample), finite) if summary.continuous and len(finite) else None
        return FeatureComparison(
            n=n,
            n_finite=len(finite),
            null_rate=float(1 - len(finite) / n) if n else 0.0,
            zero_rate=float(np.mean(finite == 0)) if len(finite) else None,
            shares=shares.tolist(),
            psi=psi,
            ks=ks,
        )
    if isinstance(values, np.ndarray):  # a numeric column where categories were expected: compare as text
        present = [str(x) for x in values.tolist() if np.isfinite(x)]
    else:
        present = [x for x in values if x is not None]
    shares_c = _category_shares(present, summary.categories)
    psi = psi_from_shares(np.asarray(summary.shares), np.asarray(shares_c)) if present else float("nan")
    return FeatureComparison(
        n=n,
        n_finite=len(present),
        null_rate=float(1 - len(present) / n) if n else 0.0,
        zero_rate=None,
        shares=shares_c,
        psi=psi,
        ks=None,
    )


def _as_numbers(values: Sequence[Any]) -> np.ndarray:
    out = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        with contextlib.suppress(TypeError, ValueError):
            out[i] = float(v) if v is not None else np.nan
    return out
