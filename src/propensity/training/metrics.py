"""Evaluation metrics for calibrated probabilities: discrimination, calibration, lift and the curves behind them.

ECE is computed here (10 equal-width bins over [0, 1], weighted by bin size: Σ n_b/N · |mean p − mean y|);
ROC-AUC, PR-AUC (average precision), log loss and Brier come from scikit-learn.

>>> import numpy as np
>>> round(expected_calibration_error(np.array([0.1, 0.1, 0.9, 0.9]), np.array([0, 0, 1, 1])), 3)
0.1
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

N_BINS = 10


def expected_calibration_error(p: np.ndarray, y: np.ndarray, bins: int = N_BINS) -> float:
    idx = np.minimum((p * bins).astype(int), bins - 1)
    n = np.bincount(idx, minlength=bins)
    sp = np.bincount(idx, weights=p, minlength=bins)
    sy = np.bincount(idx, weights=y, minlength=bins)
    mask = n > 0
    return float(np.sum(np.abs(sp[mask] - sy[mask])) / len(p))


def reliability_curve(p: np.ndarray, y: np.ndarray, bins: int = N_BINS) -> list[dict[str, float]]:
    """Per equal-width bin: count, mean predicted probability, realised rate (empty bins left out)."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        if m.any():
            out.append({"bin": b, "lo": b / bins, "hi": (b + 1) / bins, "n": int(m.sum()),
                        "mean_predicted": float(p[m].mean()), "realised_rate": float(y[m].mean())})  # fmt: skip
    return out


def deciles(p: np.ndarray, y: np.ndarray) -> list[dict[str, float]]:
    """Rows sorted by score, cut into 10 equal groups (decile 1 = highest): rate, lift, cumulative gains."""
    order = np.argsort(-p, kind="stable")
    ys, ps = y[order], p[order]
    base = float(y.mean()) or 1e-12
    total_pos = float(y.sum()) or 1e-12
    out = []
    cum = 0.0
    for d, part in enumerate(np.array_split(np.arange(len(y)), 10), start=1):
        if len(part) == 0:
            continue
        rate = float(ys[part].mean())
        cum += float(ys[part].sum())
        out.append({"decile": d, "n": len(part), "min_score": float(ps[part].min()), "mean_score": float(ps[part].mean()),
                    "realised_rate": rate, "lift": rate / base,
                    "cumulative_share": (part[-1] + 1) / len(y), "cumulative_gain": cum / total_pos})  # fmt: skip
    return out


def histogram(p: np.ndarray, bins: int = 20) -> dict[str, list[float]]:
    counts, edges = np.histogram(p, bins=bins, range=(0.0, 1.0))
    return {"edges": edges.tolist(), "counts": counts.astype(float).tolist()}


def evaluate(p: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Every number and curve the report shows for one model on one split."""
    y = y.astype(np.float64)
    dec = deciles(p, y)
    base = float(y.mean())
    return {
        "n": len(y),
        "positives": int(y.sum()),
        "base_rate": base,
        "mean_score": float(p.mean()),
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(p, y),
        "lift_top_decile": dec[0]["lift"] if dec else float("nan"),
        "reliability": reliability_curve(p, y),
        "deciles": dec,
        "histogram": histogram(p),
    }


HEADLINE = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_top_decile")


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(metrics[k]) for k in HEADLINE}
