"""Scoring supplied rows: a table whose rows carry the bundle's features (``propensity score --rows FILE``).

A bundle trained on a labelled table (``propensity train --table``) reads that table's columns; a file of new
rows with the same columns is scored as they are, with no event log. The rows are checked against the bundle's
feature schema first: a feature column missing from the file, or a value that cannot be read as the feature's
type (text in a number column), is refused with the column and example rows named. Columns the bundle does not
use are ignored (and listed). The result is an ordinary scoring run (segments, percentiles, holdout groups, the
decision policy, the score row contract), stored like any other or written to a file.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from propensity.core.errors import PropensityError
from propensity.core.frames import to_arrow
from propensity.core.values import ValueReadError, id_text, read_binary
from propensity.events.tables import type_text_columns
from propensity.registry.table_samples import LABEL, SCORE_PREFIX
from propensity.scoring.batch import BatchResult, completed_run
from propensity.scoring.model import ServingModel
from propensity.scoring.policy import DecisionContext, decide
from propensity.scoring.rows import ActionScores, RunStamp, holdout_groups, score_rows
from propensity.scoring.score_store import conform, new_run_id
from propensity.scoring.scores import encode
from propensity.workspace import Workspace


class SuppliedRowsError(PropensityError):
    """Supplied rows do not fit the bundle's feature schema; the message names the columns and rows."""


def feature_schema(manifest: dict[str, Any], model: ServingModel) -> list[tuple[str, str]]:
    """Each feature the bundle reads with its kind: ``category`` (text), ``number`` (numbers and booleans)."""
    declared = {f["name"]: f["type"] for f in (manifest.get("table") or {}).get("features", [])}
    out = []
    for name, vocab in zip(model.columns, model.column_vocab, strict=True):
        kind = "category" if vocab is not None else "number"
        if declared.get(name) == "bool":
            kind = "boolean"
        out.append((name, kind))
    return out


def check_rows(table: pa.Table, schema: list[tuple[str, str]]) -> tuple[pa.Table, list[str]]:
    """The feature columns of ``table`` typed for the model, and the columns it ignores; raises
    :class:`SuppliedRowsError` naming every missing or unreadable column (with up to three example rows)."""
    problems = []
    missing = [n for n, _ in schema if n not in table.column_names]
    if missing:
        problems.append(f"missing feature column(s): {', '.join(missing)}")
    cols: dict[str, Any] = {}
    for name, kind in schema:
        if name not in table.column_names:
            continue
        col = table.column(name)
        if kind == "category":
            cols[name] = col.cast(pa.string())
            continue
        if pa.types.is_boolean(col.type) or pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            cols[name] = col.cast(pa.float64())
            continue
        text = col.cast(pa.string())
        values = text.to_pylist()
        bad = []
        parsed: list[float | None] = []
        for i, v in enumerate(values):
            if v is None or not v.strip():
                parsed.append(None)
                continue
            word = v.strip().lower()
            if kind == "boolean" and word in ("true", "false", "yes", "no", "t", "f", "y", "n", "1", "0"):
                parsed.append(1.0 if word in ("true", "yes", "t", "y", "1") else 0.0)
                continue
            try:
                parsed.append(float(v))
            except ValueError:
                parsed.append(None)
                bad.append(i)
        if bad:
            examples = ", ".join(f"row {i + 1}: {values[i]!r}" for i in bad[:3])
            problems.append(f"{name}: {len(bad)} value(s) are not a {kind} ({examples})")
        cols[name] = pa.array(parsed, pa.float64())
    if problems:
        raise SuppliedRowsError("the rows do not fit the bundle's features: " + "; ".join(problems))
    used = {n for n, _ in schema}
    ignored = [c for c in table.column_names if c not in used]
    return pa.table(cols) if cols else pa.table({}), ignored


def score_supplied(
    workspace: Workspace,
    data: Any,
    *,
    bundle: str | None = None,
    id_column: str | None = None,
    as_of: datetime | None = None,
) -> tuple[BatchResult, list[str]]:
    """Score every row of ``data`` (a file already read, or any table) with the production bundle (or
    ``bundle``); returns the run (not written) and the columns the bundle ignored."""
    from propensity.registry.bundle import read_manifest
    from propensity.registry.registry import Registry

    t0 = time.perf_counter()
    registry = Registry(workspace)
    bundle_id = registry.resolve(bundle) if bundle else registry.production()
    if bundle_id is None:
        raise SuppliedRowsError("no bundle is in production; promote one or pass --bundle <id>")
    path = registry.path(bundle_id)
    manifest = read_manifest(path).to_json()
    model = ServingModel.from_bundle_dir(path)
    table = type_text_columns(to_arrow(data, what="rows"))
    n = table.num_rows
    if id_column is None:
        id_column = next((c for c in ("id", "customer_id") if c in table.column_names), None)
        table_id = (manifest.get("actions", {}).get(model.action_names[0], {}).get("definition") or {}).get(
            "id"
        )
        if id_column is None and table_id in table.column_names:
            id_column = table_id
    if id_column is not None:
        if id_column not in table.column_names:
            raise SuppliedRowsError(
                f"--id: no column {id_column!r}; the rows have {', '.join(table.column_names)}"
            )
        ids = id_text(table.column(id_column))
        if ids.null_count:
            first = pc.index(pc.is_null(ids), True).as_py()
            raise SuppliedRowsError(
                f"{id_column}: {ids.null_count} row(s) without an id (first: row {first + 1})"
            )
        if len(pc.unique(ids)) != n:
            raise SuppliedRowsError(f"{id_column}: ids repeat; each supplied row needs its own id")
        features = table.drop([id_column])
    else:
        ids = pa.array([str(i) for i in range(1, n + 1)], pa.string())
        features = table
    typed, ignored = check_rows(features, feature_schema(manifest, model))
    spec = workspace.spec
    scored_at = datetime.now(UTC)
    as_of = as_of or scored_at
    expiration_at = scored_at + spec.scoring.ttl.timedelta
    run_id = new_run_id(scored_at)
    probs = model.probabilities_many(encode(model, typed)) if n else np.zeros((0, len(model.action_names)))
    con = duckdb.connect()
    try:
        holdouts = {a: holdout_groups(con, ids, spec.experiments.holdout_for(a)) for a in model.action_names}
    finally:
        con.close()
    stamp = RunStamp(run_id, scored_at, expiration_at, as_of, model.version, model.feature_set_version)
    per_action = [
        ActionScores(a, probs[:, i], np.ones(n, dtype=bool), False, model.actions[a].score_quantiles)
        for i, a in enumerate(model.action_names)
    ]
    rows, segmentations = score_rows(
        ids,
        per_action,
        stamp=stamp,
        segments=spec.segments,
        holdouts=holdouts,
        consent=pa.nulls(n, pa.string()),
    )
    rows = conform(decide(rows, spec.policies, context=DecisionContext()))
    run = completed_run(
        stamp,
        rows,
        segmentations,
        {
            "customers": n,
            "actions": list(model.action_names),
            "supplied_rows": True,
            "ignored_columns": ignored,
            "eligible": {a: n for a in model.action_names},
            "segments": {a: s.to_json() for a, s in segmentations.items()},
            "fallback_actions": [],
            "missing_features": [],
            "seconds": {"total": round(time.perf_counter() - t0, 3)},
        },
    )
    sample = typed
    for i, a in enumerate(model.action_names):
        sample = sample.append_column(SCORE_PREFIX + a, pa.array(probs[:, i], pa.float64()))
    labels = _known_outcomes(table, manifest, model)
    if labels is not None:
        sample = sample.append_column(LABEL, labels)
    return BatchResult(run, rows, monitoring_sample=sample), ignored


def _known_outcomes(table: pa.Table, manifest: dict[str, Any], model: ServingModel) -> pa.Array | None:
    """The rows' outcomes (1/0, null where missing) when they carry the bundle's label column, read as training
    read it; None when they do not (new rows, outcomes not known yet) or it cannot be read."""
    definition = (manifest.get("actions", {}).get(model.action_names[0], {}).get("definition")) or {}
    label = definition.get("label")
    if definition.get("kind") != "table" or label not in table.column_names:
        return None
    try:
        return read_binary(table.column(label), positive=definition.get("positive")).values
    except ValueReadError:
        return None
