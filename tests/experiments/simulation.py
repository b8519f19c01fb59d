"""A small simulated experiment with a known (planted) treatment effect, for the lift and uplift tests.

Customers have two features. The baseline purchase probability depends on ``x2``; the treatment adds
``EFFECT`` to it for "persuadable" customers (``x1 > 0``) and nothing for the others, so the population's true
absolute lift is ``EFFECT / 2`` and each segment's is known. Groups come from the real
:func:`propensity.core.holdout.group`, as in production.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from propensity.config.experiments import Holdout
from propensity.core.holdout import TREATMENT, group

EFFECT = 0.15
BASE_INTERCEPT, BASE_SLOPE = -1.5, 0.8


def baseline(x2: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(BASE_INTERCEPT + BASE_SLOPE * x2)))


def _expected_baseline() -> float:
    # E[sigmoid(a + b·Z)], Z ~ N(0, 1), by Gauss–Hermite quadrature (exact to ~1e-12 here).
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    return float(np.sum(weights * baseline(nodes)) / np.sqrt(2 * np.pi))


TRUE_CONTROL_RATE = _expected_baseline()
TRUE_ABSOLUTE_LIFT = EFFECT / 2  # P(x1 > 0) = 1/2
TRUE_RELATIVE_LIFT = TRUE_ABSOLUTE_LIFT / TRUE_CONTROL_RATE
# Per segment: persuadables gain EFFECT; the others gain nothing (x1 and x2 are independent).
TRUE_SEGMENT_LIFT = {"persuadable": EFFECT, "other": 0.0}


@dataclass
class Experiment:
    customer_ids: list[str]
    x: np.ndarray  # rows × 2
    groups: list[str]
    treated: np.ndarray
    segments: list[str]
    outcome: np.ndarray
    true_uplift: np.ndarray


def simulate(n: int, *, seed: int, holdout: Holdout, prefix: str = "c") -> Experiment:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2))
    ids = [f"{prefix}{seed}-{i}" for i in range(n)]
    groups = [group(c, holdout) for c in ids]
    treated = np.array([g == TREATMENT for g in groups])
    tau = np.where(x[:, 0] > 0, EFFECT, 0.0)
    p = baseline(x[:, 1]) + tau * treated
    y = (rng.random(n) < p).astype(np.int64)
    segments = ["persuadable" if v > 0 else "other" for v in x[:, 0]]
    return Experiment(ids, x, groups, treated, segments, y, tau)
