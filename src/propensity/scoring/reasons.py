"""Reason codes for batch rows: the features that moved a score most, only on the rows that need them.

A stage of batch scoring (:mod:`propensity.scoring.batch`), run after the decisions so that by default only the
activated rows (each customer's next best action) pay for it. The attributions are serving's ``explain=true``
ones (path attributions in log-odds, :meth:`~propensity.scoring.compiled.CompiledScorer.contributions`), with the
feature's value; the JSON is serving's too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from propensity.config.scoring import ScoringSettings
from propensity.scoring.compiled import ModelFormatError
from propensity.scoring.model import ServingModel

CHUNK = 50_000  # rows attributed per native call (bounds the rows × columns matrix)


def reason_json(contrib: np.ndarray, columns: Sequence[str], features: pa.Table, top: int) -> list[str]:
    """Top-``top`` reason codes per row, as JSON like serving's ``reason_codes`` (with the feature's value)."""
    order = np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :top]
    picked = np.take_along_axis(contrib, order, axis=1)
    values: dict[int, list[Any]] = {}
    for j in np.unique(order).tolist():
        name = columns[j]
        values[j] = features.column(name).to_pylist() if name in features.column_names else []
    names = [str(c) for c in columns]
    out = []
    for r, (js, cs) in enumerate(zip(order.tolist(), picked.tolist(), strict=True)):
        codes = []
        for j, c in zip(js, cs, strict=True):
            if c == 0.0:
                continue
            vals = values[j]
            codes.append(
                {"feature": names[j], "value": vals[r] if vals else None, "contribution": round(c, 6),
                 "direction": "up" if c > 0 else "down"}
            )  # fmt: skip
        out.append(orjson.dumps(codes).decode())
    return out


def reason_codes(
    model: ServingModel,
    rows: pa.Table,
    actions: Sequence[str],
    inputs: np.ndarray,
    features: pa.Table,
    settings: ScoringSettings,
    *,
    threads: int = 1,
) -> pa.Array:
    """The ``reason_codes`` column for ``rows`` (one block of ``len(inputs)`` customers per action, in
    ``actions`` order): for each model action's rows chosen by ``settings.reason_codes_for`` (``activated``:
    the customer's next best action; ``eligible``: every eligible row), null elsewhere and everywhere when
    ``settings.reason_codes`` is 0 or the bundle has no node values to attribute with. ``threads``: the cores
    the attributions may use."""
    if not settings.reason_codes or inputs.shape[0] == 0:
        return pa.nulls(rows.num_rows, pa.string())
    n = inputs.shape[0]
    codes: list[str | None] = [None] * rows.num_rows
    if settings.reason_codes_for == "activated":
        chosen = pc.equal(rows.column("decision_policy"), "ev_max").fill_null(False)
    else:
        chosen = rows.column("eligible")
    chosen_np = np.asarray(chosen.to_numpy(zero_copy_only=False), dtype=bool)
    for p, a in enumerate(actions):
        if a not in model.actions:
            continue
        m = model.action_names.index(a)
        idx = np.flatnonzero(chosen_np[p * n : (p + 1) * n])
        for lo in range(0, idx.size, CHUNK):
            part = idx[lo : lo + CHUNK]
            try:
                contrib = model.scorer.contributions(inputs[part], m, threads=threads)
            except ModelFormatError:  # a model saved without internal values: no reason codes
                return pa.nulls(rows.num_rows, pa.string())
            texts = reason_json(contrib, model.columns, features.take(part), settings.reason_codes)
            for r, text in zip(part.tolist(), texts, strict=True):
                codes[p * n + r] = text
    return pa.array(codes, pa.string())
