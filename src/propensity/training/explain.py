"""Why a model scores as it does: global importance and per-score reason codes, from additive contributions.

Every served kind splits a score's log-odds into per-feature contributions plus a bias: LightGBM by TreeSHAP
(``pred_contrib=True``), the linear model by its terms (each term minus its mean on the training rows), a blend
by the weighted sum of both. Global importance is the mean |contribution| over a sample of rows (plus LightGBM's
split gain where there are trees); a score's reason codes are its top contributing features with their
direction. The scoring API and exports reuse :func:`reason_codes`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from propensity.training.trainers import LightGBMModel, ServedModel

SHAP_SAMPLE = 5000


def _served(model: ServedModel | LightGBMModel) -> ServedModel:
    return model if isinstance(model, ServedModel) else ServedModel("lightgbm", lightgbm=model)


def importance(
    model: ServedModel | LightGBMModel, x: np.ndarray, names: list[str], *, seed: int = 0
) -> list[dict[str, Any]]:
    """Per feature: mean |contribution| (log-odds) on up to 5,000 rows and, for trees, the total split gain;
    sorted by mean |contribution|."""
    served = _served(model)
    if served.lightgbm is not None:
        gain = np.asarray(served.lightgbm.booster.feature_importance(importance_type="gain"), dtype=float)
    else:
        gain = np.zeros(len(names))
    rng = np.random.default_rng(seed)
    rows = x if len(x) <= SHAP_SAMPLE else x[rng.choice(len(x), SHAP_SAMPLE, replace=False)]
    contrib = served.contributions(rows)[:, : len(names)] if len(rows) else np.zeros((0, len(names)))
    shap = np.abs(contrib).mean(axis=0) if len(rows) else np.zeros(len(names))
    rows_out = sorted(
        ((float(s), float(g), n) for n, g, s in zip(names, gain, shap, strict=True)),
        key=lambda r: (-r[0], -r[1], r[2]),
    )
    return [{"feature": n, "gain": g, "mean_abs_shap": s} for s, g, n in rows_out]


def reason_codes(
    model: ServedModel | LightGBMModel, x: np.ndarray, names: list[str], *, top: int = 3
) -> list[list[dict[str, Any]]]:
    """For each row, the ``top`` features by |contribution|: ``{feature, direction (+/-), contribution}``.

    The direction says whether the feature pushed this customer's score up or down relative to the average
    customer (the bias). Contributions are in log-odds, before calibration (which is monotone, so the ranking
    and directions hold for the calibrated probability too).
    """
    contrib = _served(model).contributions(x)[:, : len(names)]
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
