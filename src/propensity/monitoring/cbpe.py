"""Performance before labels mature: confidence-based performance estimation (CBPE) from calibrated scores.

If a score p really is the probability of the outcome, the confusion matrix at any threshold has an expected
value from the scores alone: a row scored p above the threshold is a true positive with probability p and a
false positive with probability 1 − p. The same holds for ROC-AUC, the probability that a random positive is
scored above a random negative: weight every ordered pair (i, j) with p_i · (1 − p_j). This is the idea of
NannyML's CBPE. It stays honest only while the model stays calibrated, which the calibration monitor checks
once labels mature; until then a falling expected AUC or precision is the early sign of a silent degradation.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> p = rng.beta(1, 6, size=20_000)
>>> y = rng.random(20_000) < p
>>> est = estimate_performance(p, threshold=0.3)
>>> measured = measured_performance(p, y, threshold=0.3)
>>> abs(est["expected_auc"] - measured["roc_auc"]) < 0.02
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score


def expected_auc(p: np.ndarray) -> float | None:
    """The ROC-AUC expected if each row's outcome is a Bernoulli(p) draw (ties count one half).

    Σ over pairs i ≠ j of p_i (1 − p_j) [s_i > s_j] / Σ over pairs i ≠ j of p_i (1 − p_j), in O(n log n).
    """
    p = np.asarray(p, dtype=np.float64)
    if len(p) < 2:
        return None
    order = np.argsort(p, kind="stable")
    s = p[order]
    neg = 1.0 - s
    # Rows grouped by equal score: pairs inside a group are ties.
    starts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))
    group_pos = np.add.reduceat(s, starts)
    group_neg = np.add.reduceat(neg, starts)
    neg_below = np.concatenate([[0.0], np.cumsum(group_neg)[:-1]])
    # Within a group, the pair (i, i) is not a pair: subtract Σ p_i (1 − p_i) from the tie term.
    self_pairs = np.add.reduceat(s * neg, starts)
    numerator = float(np.sum(group_pos * neg_below) + 0.5 * np.sum(group_pos * group_neg - self_pairs))
    denominator = float(s.sum() * neg.sum() - np.sum(s * neg))
    return numerator / denominator if denominator > 0 else None


def top_share_threshold(p: np.ndarray, share: float) -> float:
    """The score at or above which the top ``share`` of rows lie."""
    if len(p) == 0:
        return 1.0
    return float(np.quantile(np.asarray(p, dtype=np.float64), 1.0 - share, method="higher"))


def estimate_performance(p: np.ndarray, *, threshold: float) -> dict[str, Any]:
    """Expected AUC, precision and recall at ``threshold``, realised rate and the expected confusion matrix."""
    p = np.asarray(p, dtype=np.float64)
    selected = p >= threshold
    tp = float(p[selected].sum())
    fp = float((1.0 - p[selected]).sum())
    fn = float(p[~selected].sum())
    tn = float((1.0 - p[~selected]).sum())
    return {
        "n": len(p),
        "threshold": threshold,
        "selected": int(selected.sum()),
        "expected_auc": expected_auc(p),
        "expected_precision": tp / (tp + fp) if selected.any() else None,
        "expected_recall": tp / (tp + fn) if tp + fn > 0 else None,
        "expected_rate": float(p.mean()) if len(p) else None,
        "expected_confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }


def measured_performance(p: np.ndarray, y: np.ndarray, *, threshold: float) -> dict[str, Any]:
    """The same figures measured against labels (AUC is None when only one class is present)."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y).astype(np.float64)
    selected = p >= threshold
    positives = float(y.sum())
    return {
        "n": len(p),
        "threshold": threshold,
        "roc_auc": float(roc_auc_score(y, p)) if 0 < positives < len(y) else None,
        "precision": float(y[selected].mean()) if selected.any() else None,
        "recall": float(y[selected].sum() / positives) if positives else None,
        "rate": float(y.mean()) if len(y) else None,
    }
