"""Model scores for feature rows: encode the offline features, run the compiled scorer, calibrate.

The scoring stage of batch scoring, and the function Spark executors run inside ``mapInArrow``
(:func:`score_record_batch`: a record batch of feature rows and a loaded bundle in, score columns out). Scores
are bit for bit those of serving's single-row path (:meth:`~propensity.scoring.model.ServingModel.probabilities`)
and, before calibration, of ``Booster.predict(raw_score=True)``.

>>> import lightgbm as lgb, numpy as np, pyarrow as pa
>>> from propensity.scoring.model import ActionModel, ServingModel
>>> x = np.random.default_rng(0).normal(size=(300, 2))
>>> booster = lgb.train({"objective": "binary", "verbosity": -1}, lgb.Dataset(x, (x[:, 0] > 0).astype(int)), 5)
>>> model = ServingModel("m-1", "fs-1", [ActionModel("buy_7d", booster.model_to_string(), ["f0", "f1"],
...                                                  {"method": "identity"})])
>>> batch = pa.record_batch({"f0": x[:3, 0], "f1": x[:3, 1]})
>>> out = score_record_batch(model, batch)
>>> out.schema.names, out.column(0).to_pylist() == [model.probabilities(list(r))[0] for r in x[:3]]
(['buy_7d'], True)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from propensity.scoring.model import ServingModel


def encode(model: ServingModel, features: pa.Table | pa.RecordBatch) -> np.ndarray:
    """Offline feature columns → the model's input matrix, as its encoders encode them (see
    :class:`~propensity.scoring.model.RowEncoder`): numbers as floats, null → NaN, booleans 0/1, text → its
    category code (unseen or missing → NaN). A column the feature rows lack is all NaN."""
    n = features.num_rows
    out = np.full((n, max(1, len(model.columns))), np.nan, dtype=np.float64)
    names = set(features.schema.names)
    for j, (name, vocab) in enumerate(zip(model.columns, model.column_vocab, strict=True)):
        if name not in names:
            continue
        col = features.column(name)
        if vocab is not None:
            cats = pa.array(sorted(vocab, key=vocab.__getitem__), pa.string())
            codes = pc.index_in(col.cast(pa.string()), value_set=cats)
            out[:, j] = codes.to_numpy(zero_copy_only=False).astype(np.float64)
        else:
            try:
                out[:, j] = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
    return out


def probabilities(
    model: ServingModel, features: pa.Table | pa.RecordBatch, *, threads: int = 1
) -> np.ndarray:
    """Calibrated probabilities, ``rows × model.action_names``, of feature rows (``threads``: the cores to use)."""
    return model.probabilities_many(encode(model, features), threads=threads)


def score_record_batch(model: ServingModel, batch: pa.RecordBatch, *, threads: int = 1) -> pa.RecordBatch:
    """One float64 column per model action (named by the action, ``model.action_names`` order): the calibrated
    probability of each feature row of ``batch``. What a Spark executor runs per Arrow batch."""
    probs = probabilities(model, batch, threads=threads)
    return pa.record_batch(
        [pa.array(np.ascontiguousarray(probs[:, i]), pa.float64()) for i in range(len(model.action_names))],
        names=list(model.action_names),
    )


def percentiles(quantiles: Sequence[float] | None, scores: np.ndarray) -> np.ndarray:
    """:func:`propensity.scoring.model.percentile_of` for an array (NaN where there are no quantiles)."""
    if not quantiles:
        return np.full(scores.shape, np.nan)
    q = np.asarray(quantiles, dtype=np.float64)
    n = len(q) - 1
    j = np.clip(np.searchsorted(q, scores, side="right") - 1, 0, n - 1)
    lo, hi = q[j], q[np.minimum(j + 1, n)]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(hi == lo, 0.0, (scores - lo) / (hi - lo))
    pct = np.round(100.0 * (j + frac) / n, 2)
    pct = np.where(scores <= q[0], 0.0, np.where(scores >= q[-1], 100.0, pct))
    return np.where(np.isnan(scores), np.nan, pct)
