"""Why a model scores as it does: global importance and per-score reason codes, from LightGBM's SHAP values.

``pred_contrib=True`` gives, for each row, each feature's additive contribution to the raw log-odds (TreeSHAP)
plus a bias. Global importance is the split gain and the mean |SHAP| over a sample of rows; a score's reason
codes are its top contributing features with their direction. The scoring API and exports reuse
:func:`reason_codes`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from propensity.training.trainers import LightGBMModel

SHAP_SAMPLE = 5000


def importance(
    model: LightGBMModel, x: np.ndarray, names: list[str], *, seed: int = 0
) -> list[dict[str, Any]]:
    """Per feature: total split gain and mean |SHAP| (log-odds) on up to 5,000 rows; sorted by mean |SHAP|."""
    gain = np.asarray(model.booster.feature_importance(importance_type="gain"), dtype=float)
    rng = np.random.default_rng(seed)
    rows = x if len(x) <= SHAP_SAMPLE else x[rng.choice(len(x), SHAP_SAMPLE, replace=False)]
    contrib = model.contributions(rows)[:, : len(names)] if len(rows) else np.zeros((0, len(names)))
    shap = np.abs(contrib).mean(axis=0) if len(rows) else np.zeros(len(names))
    rows_out = sorted(
        ((float(s), float(g), n) for n, g, s in zip(names, gain, shap, strict=True)),
        key=lambda r: (-r[0], -r[1], r[2]),
    )
    return [{"feature": n, "gain": g, "mean_abs_shap": s} for s, g, n in rows_out]


def reason_codes(
    model: LightGBMModel, x: np.ndarray, names: list[str], *, top: int = 3
) -> list[list[dict[str, Any]]]:
    """For each row, the ``top`` features by |contribution|: ``{feature, direction (+/-), contribution}``.

    The direction says whether the feature pushed this customer's score up or down relative to the average
    customer (the bias). Contributions are in log-odds, before calibration (which is monotone, so the ranking
    and directions hold for the calibrated probability too).
    """
    contrib = model.contributions(x)[:, : len(names)]
    order = np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :top]
    out = []
    for i in range(len(x)):
        codes = []
        for j in order[i]:
            c = float(contrib[i, j])
            if c == 0.0:
                continue
            codes.append(
                {"feature": names[j], "direction": "+" if c > 0 else "-", "contribution": round(c, 6)}
            )
        out.append(codes)
    return out
