"""Lift: treated vs control outcome rates, absolute and relative lift, with 95% confidence intervals.

The absolute lift is ``p_t - p_c`` (treated rate minus control rate) with Newcombe's hybrid score interval
(method 10 of Newcombe 1998: the two groups' Wilson intervals combined). It stays inside [-1, 1] and keeps its
coverage near 95% for small groups and rates near 0 or 1, where the normal ("Wald") interval is too narrow.
The relative lift is ``p_t / p_c - 1`` with the log-ratio (Katz) interval:
``exp(log(p_t / p_c) ± z·sqrt(1/x_t - 1/n_t + 1/x_c - 1/n_c)) - 1`` (the delta method on the log scale); when a
group has no positive outcome, 0.5 is added to both groups' counts so that the interval stays finite.

>>> r = lift(x_t=120, n_t=1000, x_c=80, n_c=1000)
>>> round(r.absolute, 3), r.absolute_ci[0] > 0
(0.04, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from propensity.core.holdout import CONTROL, TREATMENT

Z95 = 1.959963984540054
ALL_SEGMENTS = "(all)"


def wilson(x: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``x / n`` (``(0, 1)`` when ``n`` is 0)."""
    if n <= 0:
        return 0.0, 1.0
    p = x / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Lift:
    """Treated vs control for one group of rows (an action, or an action's segment)."""

    n_treated: int
    n_control: int
    x_treated: int
    x_control: int
    rate_treated: float | None
    rate_control: float | None
    absolute: float | None
    absolute_ci: tuple[float, float] | None
    relative: float | None
    relative_ci: tuple[float, float] | None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for k in ("absolute_ci", "relative_ci"):
            out[k] = None if out[k] is None else list(out[k])
        return out

    @property
    def significant(self) -> bool:
        """Whether the absolute lift's 95% interval excludes 0."""
        return self.absolute_ci is not None and (self.absolute_ci[0] > 0 or self.absolute_ci[1] < 0)


def lift(*, x_t: int, n_t: int, x_c: int, n_c: int, z: float = Z95) -> Lift:
    """Lift of ``x_t`` positives out of ``n_t`` treated rows over ``x_c`` out of ``n_c`` control rows.

    Rates, lifts and intervals are None where a group is empty (nothing to compare).
    """
    if n_t <= 0 or n_c <= 0:
        return Lift(n_t, n_c, x_t, x_c, x_t / n_t if n_t else None, x_c / n_c if n_c else None,
                    None, None, None, None)  # fmt: skip
    p_t, p_c = x_t / n_t, x_c / n_c
    l_t, u_t = wilson(x_t, n_t, z)
    l_c, u_c = wilson(x_c, n_c, z)
    d = p_t - p_c
    # A difference of rates lies in [-1, 1]; rounding could put a bound a hair outside (e.g. 0/3 vs 400/400).
    lo = max(-1.0, d - math.sqrt((p_t - l_t) ** 2 + (u_c - p_c) ** 2))
    hi = min(1.0, d + math.sqrt((u_t - p_t) ** 2 + (p_c - l_c) ** 2))
    relative: float | None
    relative_ci: tuple[float, float] | None
    if x_c == 0 and x_t == 0:
        relative, relative_ci = None, None
    else:
        # Zero cells make the log ratio infinite; the usual 0.5 correction keeps the interval finite.
        a, b, na, nb = (x_t, x_c, n_t, n_c) if x_t and x_c else (x_t + 0.5, x_c + 0.5, n_t + 0.5, n_c + 0.5)
        log_rr = math.log((a / na) / (b / nb))
        se = math.sqrt(max(0.0, 1 / a - 1 / na + 1 / b - 1 / nb))
        relative = p_t / p_c - 1 if p_c > 0 else math.exp(log_rr) - 1
        relative_ci = (math.exp(log_rr - z * se) - 1, math.exp(log_rr + z * se) - 1)
    return Lift(n_t, n_c, x_t, x_c, p_t, p_c, d, (lo, hi), relative, relative_ci)


def lift_of(groups: Sequence[str | None] | np.ndarray, outcomes: Sequence[int] | np.ndarray) -> Lift:
    """Lift from one group label (``treatment`` / ``control``; others ignored) and one 0/1 outcome per row."""
    g = np.asarray(groups, dtype=object)
    y = np.asarray(outcomes, dtype=np.int64)
    t, c = g == TREATMENT, g == CONTROL
    return lift(x_t=int(y[t].sum()), n_t=int(t.sum()), x_c=int(y[c].sum()), n_c=int(c.sum()))


def lift_by_segment(
    groups: Sequence[str | None], outcomes: Sequence[int] | np.ndarray, segments: Sequence[str | None]
) -> dict[str, Lift]:
    """Lift over all rows (key ``(all)``) and per segment (rows without a segment count only in ``(all)``)."""
    seg = np.asarray(segments, dtype=object)
    g = np.asarray(groups, dtype=object)
    y = np.asarray(outcomes, dtype=np.int64)
    out = {ALL_SEGMENTS: lift_of(g, y)}
    for name in sorted({s for s in seg.tolist() if s is not None}):
        mask = seg == name
        out[str(name)] = lift_of(g[mask], y[mask])
    return out
