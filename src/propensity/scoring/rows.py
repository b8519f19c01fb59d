"""Scores → canonical score rows: segments, percentiles, holdout groups and consent, vectorised over Arrow.

A stage of batch scoring (:mod:`propensity.scoring.batch`): it takes each action's scores and eligibility for
one list of customers and builds the run's rows (:data:`~propensity.core.score_row.SCORE_ROW_SCHEMA`), one block
of customers per action, with ``next_best_action``, ``decision_policy`` and ``reason_codes`` left for the later
stages. Repeated values (the action, the run's stamps) are built without a Python list per row; holdout groups
are hashed by DuckDB with the one sampling rule (:mod:`propensity.core.hashing`), bit for bit as
:func:`propensity.core.holdout.groups_for` assigns them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import duckdb
import numpy as np
import pyarrow as pa

from propensity.config.decisions import SegmentSettings
from propensity.core.holdout import CONTROL, TREATMENT, HoldoutRule
from propensity.core.score_row import SCORE_ROW_SCHEMA, UTC_US
from propensity.scoring.scores import percentiles
from propensity.scoring.segments import Segmentation, find_segments, tier_index

FALLBACK_MODEL_ID = "fallback/recency-frequency"


@dataclass(frozen=True)
class RunStamp:
    """What every row of one run carries."""

    run_id: str
    scored_at: datetime
    expiration_at: datetime
    as_of: datetime
    model_version: str
    feature_set_version: str


@dataclass(frozen=True)
class ActionScores:
    """One action's scores for the run's customers (NaN where not scored), who is eligible, and how it scored:
    ``quantiles`` (the bundle's test-score quantiles, for percentiles; None for the fallback's ranks)."""

    action: str
    scores: np.ndarray
    eligible: np.ndarray
    fallback: bool
    quantiles: Sequence[float] | None = None


def repeat(value: object, n: int, type_: pa.DataType) -> pa.Array:
    """``value`` ``n`` times, without a Python list of ``n`` items."""
    return pa.repeat(pa.scalar(value, type_), n)


def holdout_groups(
    con: duckdb.DuckDBPyConnection, customers: pa.Array, holdout: HoldoutRule | None
) -> pa.Array:
    """Each customer's group under ``holdout`` (all null without one): SHA-256 of ``salt:customer_id``, its first
    8 bytes as a fraction of 2^64 (as a double, as Python divides), control below the share."""
    n = len(customers)
    if holdout is None:
        return pa.nulls(n, pa.string())
    if n == 0:
        return pa.array([], pa.string())
    con.register("_holdout_ids", pa.table({"c": customers}))
    try:
        table = con.sql(
            "SELECT CAST(CAST('0x' || left(sha256($salt || ':' || c), 16) AS UBIGINT) AS DOUBLE) "
            "/ 18446744073709551616.0 < $share AS control FROM _holdout_ids",
            params={"salt": holdout.name, "share": float(holdout.control_share)},
        ).to_arrow_table()
    finally:
        con.unregister("_holdout_ids")
    control = np.asarray(table.column(0).to_numpy(zero_copy_only=False), dtype=bool)
    return pa.DictionaryArray.from_arrays(
        pa.array(control.astype(np.int8)), pa.array([TREATMENT, CONTROL])
    ).cast(pa.string())


def segment_names(scores: np.ndarray, segmentation: Segmentation) -> pa.Array:
    """:func:`~propensity.scoring.segments.assign` as an Arrow string array (null where the score is NaN)."""
    x = np.asarray(scores, dtype=np.float64)
    missing = np.isnan(x)
    if not segmentation.names:
        return pa.nulls(len(x), pa.string())
    tiers = np.minimum(tier_index(x, segmentation), len(segmentation.names) - 1).astype(np.int32)
    indices = pa.array(tiers, mask=missing)
    return pa.DictionaryArray.from_arrays(indices, pa.array(list(segmentation.names), pa.string())).cast(
        pa.string()
    )


def score_rows(
    customers: pa.Array,
    actions: Sequence[ActionScores],
    *,
    stamp: RunStamp,
    segments: SegmentSettings,
    holdouts: Mapping[str, pa.Array],
    consent: pa.Array,
) -> tuple[pa.Table, dict[str, Segmentation]]:
    """The run's canonical rows (one block of ``customers`` per action, in ``actions`` order) and each action's
    segmentation (cut from its eligible scores). ``holdouts``: each action's holdout groups for ``customers``;
    ``consent``: each customer's consent JSON. Ineligible rows get no score, percentile or segment."""
    n = len(customers)
    parts = []
    cuts: dict[str, Segmentation] = {}
    for a in actions:
        s = np.where(a.eligible, a.scores, np.nan)
        cuts[a.action] = seg = find_segments(s[a.eligible], segments)
        model_id = FALLBACK_MODEL_ID if a.fallback else f"{stamp.model_version}/{a.action}"
        pct = percentiles(None if a.fallback else a.quantiles, s)
        columns = {
            "customer_id": customers,
            "action": repeat(a.action, n, pa.string()),
            "score": pa.array(s, pa.float64(), from_pandas=True),
            "percentile": pa.array(pct, pa.float64(), from_pandas=True),
            "segment": segment_names(s, seg),
            "eligible": pa.array(a.eligible, pa.bool_()),
            "next_best_action": pa.nulls(n, pa.string()),
            "reason_codes": pa.nulls(n, pa.string()),
            "holdout_group": holdouts[a.action],
            "model_id": repeat(model_id, n, pa.string()),
            "model_version": repeat(stamp.model_version, n, pa.string()),
            "feature_set_version": repeat(stamp.feature_set_version, n, pa.string()),
            "scoring_run_id": repeat(stamp.run_id, n, pa.string()),
            "scored_at": repeat(stamp.scored_at, n, UTC_US),
            "expiration_at": repeat(stamp.expiration_at, n, UTC_US),
            "decision_policy": pa.nulls(n, pa.string()),
            "consent": consent,
            "fallback": repeat(a.fallback, n, pa.bool_()),
            "as_of": repeat(stamp.as_of, n, UTC_US),
            "trigger_id": pa.nulls(n, pa.string()),
        }
        parts.append(pa.table(columns, schema=SCORE_ROW_SCHEMA))
    rows = pa.concat_tables(parts) if parts else SCORE_ROW_SCHEMA.empty_table()
    return rows, cuts
