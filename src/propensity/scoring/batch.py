"""Batch scoring: every known customer × action, as of a time, into canonical score rows (one new run).

The path is the one serving uses, in bulk: point-in-time features from the offline engine for every customer
known as of ``as_of`` (its events and attributes visible by then), encoded the way the bundle's encoders encode
them, scored by the production bundle's compiled scorer (:meth:`ServingModel.probabilities_many`) and its
calibrators. Each action's eligibility is evaluated as of ``as_of`` with the rules training uses
(:func:`propensity.labels.labels.build_labels`): an ineligible customer gets a row with ``eligible = false`` and
no score. An action the bundle lacks is scored by the rule-based fallback (``fallback = true``). Then
percentiles (from the bundle's test-score quantiles), segments (:mod:`propensity.scoring.segments`), reason
codes, holdout groups, consent and the decision policy (:mod:`propensity.scoring.policy`).

:func:`score_batch` computes a run; :func:`score_and_store` also checks it against the data contract and writes
it to the workspace's score store (``propensity score`` does that).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from propensity.config.actions import Action, describe_action
from propensity.config.predicates import sql_literal
from propensity.core.clock import as_utc
from propensity.core.contract import ContractError, load_contract, validate_rows
from propensity.core.errors import PropensityError
from propensity.core.holdout import groups_for
from propensity.core.manifest import ActionManifest, BundleManifest
from propensity.core.score_row import SCORE_ROW_SCHEMA, UTC_US
from propensity.events.log import open_event_log
from propensity.events.spark import engine_of
from propensity.features.offline import compute_features
from propensity.labels.labels import attribute_condition_sql, build_labels
from propensity.scoring.compiled import ModelFormatError
from propensity.scoring.fallback import fallback_scores
from propensity.scoring.model import ServingModel
from propensity.scoring.policy import (
    DecisionContext,
    attribute_values,
    consent_json,
    decide,
    recent_activations,
    suppression_lists,
)
from propensity.scoring.score_store import ScoreStore, ScoringRun, conform, new_run_id, open_score_store
from propensity.scoring.segments import Segmentation, assign, find_segments
from propensity.workspace import Workspace

Progress = Callable[[str, int, int], None]
FALLBACK_MODEL_ID = "fallback/recency-frequency"


class BatchScoringError(PropensityError):
    """Batch scoring cannot run (no events, no production bundle, an unknown action)."""


@dataclass(frozen=True)
class BatchResult:
    run: ScoringRun
    rows: pa.Table


# ------------------------------------------------------------------------------------------- customers
_KNOWN_SQL = """
    SELECT DISTINCT customer_id FROM (
        SELECT customer_id FROM events WHERE available_at <= $t AND event_time <= $t
        UNION ALL
        SELECT customer_id FROM attributes WHERE greatest(valid_from, available_at) <= $t
    )
"""


def _in(values: Sequence[str]) -> str:
    return ", ".join(sql_literal(v) for v in sorted(set(values)))


def known_customers(con: duckdb.DuckDBPyConnection, as_of: datetime) -> list[str]:
    """Every customer with an event or attribute visible at ``as_of``, sorted."""
    rows = con.sql(f"{_KNOWN_SQL} ORDER BY 1", params={"t": as_of}).fetchall()
    return [r[0] for r in rows]


def eligible_customers(
    con: duckdb.DuckDBPyConnection, action: Action, as_of: datetime, *, zone: str = "UTC"
) -> pa.Array:
    """The customers eligible for ``action`` as of ``as_of``, by the rules training applies at a cutoff.

    A cutoff action's conditions are those of :func:`propensity.labels.labels.build_labels` at the single
    cutoff ``as_of``, evaluated without the label work (a test checks both give the same customers): known by
    then; activity in ``(as_of - active_within, as_of]``; a billing event due in the label window; the
    attribute as of ``as_of``. A trigger action (respond) is eligible for customers with a trigger (a send)
    visible in the last gap + horizon whose own eligibility held then: that send's response window is open.
    """
    if action.trigger is not None:
        window = action.gap.timedelta + action.horizon.timedelta
        far = as_of + action.span.timedelta + timedelta(days=1)
        table = build_labels(
            con, action, [as_of - window], until=as_of + timedelta(microseconds=1), data_end=far, zone=zone
        )
        # The response window is still open (it may close early: horizon: until a campaign's end date).
        table = table.filter(pc.greater(table.column("label_end"), pa.scalar(as_of, UTC_US)))
        ids = table.column("customer_id").cast(pa.string()).combine_chunks()
        return pc.unique(ids) if table.num_rows else pa.array([], pa.string())
    elig = action.eligibility
    t_us = "epoch_us(CAST($t AS TIMESTAMPTZ))"
    vis_us = "epoch_us(greatest(event_time, available_at))"
    sets = ["SELECT customer_id FROM known"]
    if elig.active_within is not None:
        recent = ""
        if not elig.active_within.is_lifetime:
            recent = f" AND epoch_us(event_time) + {elig.active_within.seconds * 1_000_000} > {t_us}"
        sets.append(
            f"SELECT customer_id FROM events WHERE event_type IN ({_in(action.activity_types)})"
            f" AND {vis_us} <= {t_us}{recent}"
        )
    if elig.due is not None:
        # Due in the label window: a billing event e with e + cycle in (as_of + gap, as_of + gap + horizon].
        cycle, gap, h = (
            x * 1_000_000 for x in (elig.due.cycle.seconds, action.gap.seconds, action.horizon.seconds)
        )
        sets.append(
            f"SELECT customer_id FROM events WHERE event_type IN ({_in(elig.due.event_type)})"
            f" AND {vis_us} <= {t_us} AND epoch_us(event_time) + {cycle - gap - h} <= {t_us}"
            f" AND epoch_us(event_time) + {cycle - gap} > {t_us}"
        )
    if elig.attribute is not None:
        sets.append(f"SELECT customer_id FROM ({attribute_condition_sql(elig.attribute, 'known_at')})")
    sql = (
        f"WITH known AS ({_KNOWN_SQL}), known_at AS (SELECT customer_id, CAST($t AS TIMESTAMPTZ) AS as_of FROM known) "
        + " INTERSECT ".join(f"({q})" for q in sets)
    )
    table = con.sql(sql, params={"t": as_of}).to_arrow_table()
    return table.column(0).cast(pa.string()).combine_chunks()


# ------------------------------------------------------------------------------------------ model input
def encode(model: ServingModel, features: pa.Table) -> np.ndarray:
    """Offline feature columns → the model's input matrix, as its encoders encode them (see
    :class:`~propensity.scoring.model.RowEncoder`): numbers as floats, null → NaN, booleans 0/1, text → its
    category code (unseen or missing → NaN). A column the feature table lacks is all NaN."""
    n = features.num_rows
    out = np.full((n, max(1, len(model.columns))), np.nan, dtype=np.float64)
    for j, (name, vocab) in enumerate(zip(model.columns, model.column_vocab, strict=True)):
        if name not in features.column_names:
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


def _reason_json(contrib: np.ndarray, columns: Sequence[str], features: pa.Table, top: int) -> list[str]:
    """Top-``top`` reason codes per row, as JSON like serving's ``reason_codes`` (with the feature's value)."""
    order = np.argsort(-np.abs(contrib), axis=1, kind="stable")[:, :top]
    values: dict[int, list[Any]] = {}
    for j in np.unique(order).tolist():
        name = columns[j]
        values[j] = features.column(name).to_pylist() if name in features.column_names else []
    out = []
    for r in range(contrib.shape[0]):
        codes = []
        for j in order[r].tolist():
            c = float(contrib[r, j])
            if c == 0.0:
                continue
            vals = values[j]
            codes.append(
                {"feature": columns[j], "value": vals[r] if vals else None, "contribution": round(c, 6),
                 "direction": "up" if c > 0 else "down"}
            )  # fmt: skip
        out.append(orjson.dumps(codes, option=orjson.OPT_SERIALIZE_NUMPY).decode())
    return out


def reason_codes_for(
    model: ServingModel,
    rows: pa.Table,
    actions: Sequence[str],
    inputs: np.ndarray,
    features: pa.Table,
    *,
    top: int,
    which: str,
    chunk: int = 50_000,
) -> pa.Array:
    """The ``reason_codes`` column: for each model action's rows chosen by ``which`` (``activated``: the row
    that is the customer's next best action; ``eligible``: every eligible row), null elsewhere. ``rows`` holds
    one block of ``len(inputs)`` customers per action, in ``actions`` order."""
    n = inputs.shape[0]
    codes: list[str | None] = [None] * rows.num_rows
    if which == "activated":
        chosen = pc.equal(rows.column("decision_policy"), "ev_max").fill_null(False)
    else:
        chosen = rows.column("eligible")
    chosen_np = np.asarray(chosen.to_numpy(zero_copy_only=False), dtype=bool)
    for p, a in enumerate(actions):
        if a not in model.actions:
            continue
        m = model.action_names.index(a)
        idx = np.flatnonzero(chosen_np[p * n : (p + 1) * n])
        for lo in range(0, idx.size, chunk):
            part = idx[lo : lo + chunk]
            try:
                contrib = model.scorer.contributions(inputs[part], m)
            except ModelFormatError:  # a model saved without internal values: no reason codes
                return pa.nulls(rows.num_rows, pa.string())
            for r, text in zip(
                part.tolist(), _reason_json(contrib, model.columns, features.take(part), top), strict=True
            ):
                codes[p * n + r] = text
    return pa.array(codes, pa.string())


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


# ------------------------------------------------------------------------------------------------ actions
def _bundle_actions(
    manifest_actions: Mapping[str, ActionManifest], spec_actions: Sequence[Action]
) -> dict[str, Action]:
    """The definition each bundle action was trained with (the spec's when the bundle did not store one)."""
    by_name = {a.name: a for a in spec_actions}
    out = {}
    for name, info in manifest_actions.items():
        definition = info.definition
        if isinstance(definition, dict):
            try:
                out[name] = Action.model_validate(definition)
                continue
            except ValueError:
                pass
        if name in by_name:
            out[name] = by_name[name]
    return out


def load_bundle_model(path: Path) -> ServingModel:
    """A bundle folder's model as serving loads it (what each Spark worker loads once, see scoring.spark)."""
    return ServingModel.from_bundle_dir(path)


def _load_model(workspace: Workspace, bundle: str | None) -> tuple[ServingModel, BundleManifest, Path]:
    from propensity.registry.bundle import read_manifest
    from propensity.registry.registry import Registry

    registry = Registry(workspace)
    bundle_id = registry.resolve(bundle) if bundle else registry.production()
    if bundle_id is None:
        raise BatchScoringError(
            "no bundle is in production; train one (`propensity train`) and promote it "
            "(`propensity models promote <id>`), or pass --bundle <id>"
        )
    path = registry.path(bundle_id)
    return ServingModel.from_bundle_dir(path), read_manifest(path), path


# ----------------------------------------------------------------------------------------------- scoring
def score_batch(
    workspace: Workspace,
    *,
    as_of: datetime | None = None,
    customers: Sequence[str] | None = None,
    actions: Sequence[str] | None = None,
    bundle: str | None = None,
    progress: Progress | None = None,
    store: ScoreStore | None = None,
) -> BatchResult:
    """Score every known customer (or ``customers``) for every action (or ``actions``) as of ``as_of``
    (default now) with the production bundle (or ``bundle``, an id or prefix). Nothing is written.

    ``store`` (default: the workspace's) is only read, for the frequency cap's history.
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    spec = workspace.spec
    settings = spec.scoring
    scored_at = datetime.now(UTC)
    as_of = as_utc(as_of) if as_of is not None else scored_at
    expiration_at = scored_at + settings.ttl.timedelta
    run_id = new_run_id(scored_at)
    model, manifest, bundle_dir = _load_model(workspace, bundle)
    trained = _bundle_actions(manifest.actions, spec.actions)
    declared = {a.name: a for a in spec.actions}
    wanted = list(actions) if actions else list(dict.fromkeys([*model.action_names, *declared]))
    unknown = [a for a in wanted if a not in model.actions and a not in declared]
    if unknown:
        known = ", ".join(sorted({*model.action_names, *declared}))
        raise BatchScoringError(f"unknown action(s) {', '.join(unknown)}; this project scores: {known}")
    typos = sorted(set(spec.policies.actions) - set(declared) - set(model.actions))
    if typos:
        known = ", ".join(sorted({*model.action_names, *declared}))
        raise BatchScoringError(f"policies.actions: no action named {', '.join(typos)}; known: {known}")
    definitions = {a: trained.get(a) or declared[a] for a in wanted}
    # A bundle needing features the project no longer computes cannot score meaningfully: every action falls
    # back to the rules (flagged) until a model trained on the current features is promoted.
    missing_features = model.encoder_for([f.name for f in spec.features]).missing
    fallback_actions = [a for a in wanted if a not in model.actions or missing_features]
    if not workspace.db_path.exists():
        raise BatchScoringError(f"{workspace.root}: no events yet; ingest some first (`propensity ingest`)")

    def tick(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(stage, done, total)

    timings["load_model"] = time.perf_counter() - t_start
    opened = open_event_log(workspace).connection(read_only=True)
    con = opened.__enter__()
    try:
        t0 = time.perf_counter()
        ids = list(dict.fromkeys(customers)) if customers is not None else known_customers(con, as_of)
        id_array = pa.array(ids, pa.string())
        timings["customers"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        eligible = {}
        for a, d in definitions.items():
            hit = pc.is_in(id_array, value_set=eligible_customers(con, d, as_of, zone=spec.timezone))
            eligible[a] = np.asarray(hit.to_numpy(zero_copy_only=False), bool)
        timings["eligibility"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        consent_values = {
            ch: attribute_values(con, attr, as_of) for ch, attr in spec.policies.consent.items()
        }
        suppressed = suppression_lists(con, spec.policies, as_of, spec.root)
        timings["policy_inputs"] = time.perf_counter() - t0
        n = len(ids)
        scores = {a: np.full(n, np.nan) for a in wanted}
        # Encoded inputs and raw feature values, kept for the reason codes computed after the decisions.
        inputs: list[np.ndarray] = []
        feature_parts: list[pa.Table] = []
        model_index = {a: i for i, a in enumerate(model.action_names)}
        batch = settings.batch_size
        for k in ("features", "model", "fallback"):
            timings[k] = 0.0
        on_spark = engine_of(workspace) == "spark" and not missing_features and n > 0
        if on_spark:
            # Features and model scores for every customer in one Spark job (mapInArrow: one scorer per
            # executor process); the passes below slice its result.
            from propensity.scoring.spark import spark_features_and_scores

            tf = time.perf_counter()
            everyone = pa.table({"customer_id": id_array, "as_of": pa.array([as_of] * n, UTC_US)})
            spark_feats, spark_probs = spark_features_and_scores(
                workspace, bundle_dir, model, spec.features, everyone, con
            )
            timings["features"] += time.perf_counter() - tf
            batch = max(n, 1)
        for start in range(0, max(n, 1), batch):
            chunk = id_array.slice(start, batch)
            if len(chunk) == 0:
                break
            spine = pa.table({"customer_id": chunk, "as_of": pa.array([as_of] * len(chunk), UTC_US)})
            tf = time.perf_counter()
            if on_spark:
                feats = spark_feats.slice(start, len(chunk))
            else:
                feats = compute_features(con, spec.features, spine)
            timings["features"] += time.perf_counter() - tf
            tm = time.perf_counter()
            sl = slice(start, start + len(chunk))
            if not missing_features:
                x = encode(model, feats)
                probs = spark_probs[sl] if on_spark else model.probabilities_many(x)
                for a in wanted:
                    if a in model_index:
                        scores[a][sl] = probs[:, model_index[a]]
                if settings.reason_codes:
                    inputs.append(x)
                    feature_parts.append(feats)
            timings["model"] += time.perf_counter() - tm
            tb = time.perf_counter()
            for a in fallback_actions:
                fb = fallback_scores(con, definitions[a], spine)
                scores[a][sl] = fb.column("score").to_numpy(zero_copy_only=False)
            timings["fallback"] += time.perf_counter() - tb
            tick("score", start + len(chunk), n)
    finally:
        opened.__exit__(None, None, None)

    t2 = time.perf_counter()
    consent = consent_json(consent_values, ids)
    segmentations: dict[str, Segmentation] = {}
    parts = []
    groups_by_experiment: dict[str | None, pa.Array] = {}

    def holdout_groups(action: str) -> pa.Array:
        # One experiment usually covers every action: hash each customer once per experiment, not per action.
        holdout = spec.experiments.holdout_for(action)
        key = None if holdout is None else holdout.name
        if key not in groups_by_experiment:
            groups_by_experiment[key] = pa.array(groups_for(holdout, ids), pa.string())
        return groups_by_experiment[key]

    for a in wanted:
        ok = eligible[a]
        s = np.where(ok, scores[a], np.nan)
        seg = find_segments(s[ok], spec.segments)
        segmentations[a] = seg
        is_fallback = a in fallback_actions
        # Fallback scores are ranks, not the model's calibrated scale: no percentile against its quantiles.
        quantiles = model.actions[a].score_quantiles if a in model.actions and not is_fallback else None
        pct = percentiles(quantiles, s)
        parts.append(
            pa.table(
                {
                    "customer_id": id_array,
                    "action": pa.array([a] * n, pa.string()),
                    "score": pa.array(s, pa.float64(), from_pandas=True),
                    "percentile": pa.array(pct, pa.float64(), from_pandas=True),
                    "segment": pa.array(assign(s, seg).tolist(), pa.string()),
                    "eligible": pa.array(ok, pa.bool_()),
                    "next_best_action": pa.nulls(n, pa.string()),
                    "reason_codes": pa.nulls(n, pa.string()),
                    "holdout_group": holdout_groups(a),
                    "model_id": pa.array(
                        [FALLBACK_MODEL_ID if is_fallback else f"{model.version}/{a}"] * n, pa.string()
                    ),
                    "model_version": pa.array([model.version] * n, pa.string()),
                    "feature_set_version": pa.array([model.feature_set_version] * n, pa.string()),
                    "scoring_run_id": pa.array([run_id] * n, pa.string()),
                    "scored_at": pa.array([scored_at] * n, UTC_US),
                    "expiration_at": pa.array([expiration_at] * n, UTC_US),
                    "decision_policy": pa.nulls(n, pa.string()),
                    "consent": pa.array(consent, pa.string()),
                    "fallback": pa.array([is_fallback] * n, pa.bool_()),
                    "as_of": pa.array([as_of] * n, UTC_US),
                    "trigger_id": pa.nulls(n, pa.string()),
                },
                schema=SCORE_ROW_SCHEMA,
            )
        )
    rows = pa.concat_tables(parts) if parts else SCORE_ROW_SCHEMA.empty_table()
    history = recent_activations(store or open_score_store(workspace), spec.policies, scored_at)
    rows = decide(rows, spec.policies, context=DecisionContext(suppressed, history))
    timings["decisions"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    if settings.reason_codes and inputs:
        column = reason_codes_for(
            model, rows, wanted, np.concatenate(inputs), pa.concat_tables(feature_parts),
            top=settings.reason_codes, which=settings.reason_codes_for,
        )  # fmt: skip
        rows = rows.set_column(rows.column_names.index("reason_codes"), "reason_codes", column)
    rows = conform(rows)
    timings["reason_codes"] = time.perf_counter() - t3
    timings["total"] = time.perf_counter() - t_start
    contract = load_contract()
    run = ScoringRun(
        run_id=run_id,
        scored_at=scored_at,
        expiration_at=expiration_at,
        as_of=as_of,
        model_version=model.version,
        feature_set_version=model.feature_set_version,
        rows=rows.num_rows,
        segment_cuts={a: s.cuts for a, s in segmentations.items()},
        segment_names={a: s.names for a, s in segmentations.items()},
        contract_version=contract.version,
        status="complete",
        details={
            "customers": n,
            "actions": wanted,
            "meanings": {a: describe_action(d, same_time=as_of == scored_at) for a, d in definitions.items()},
            "eligible": {a: int(eligible[a].sum()) for a in wanted},
            "segments": {a: s.to_json() for a, s in segmentations.items()},
            "fallback_actions": fallback_actions,
            "missing_features": missing_features,
            "seconds": {k: round(v, 3) for k, v in timings.items()},
        },
    )
    return BatchResult(run, rows)


def score_and_store(
    workspace: Workspace,
    *,
    as_of: datetime | None = None,
    customers: Sequence[str] | None = None,
    actions: Sequence[str] | None = None,
    bundle: str | None = None,
    progress: Progress | None = None,
    store: ScoreStore | None = None,
) -> BatchResult:
    """:func:`score_batch`, checked against the data contract, then written to ``store`` (default: the
    workspace's). Rows that break the contract are never written: :class:`ContractError` lists the problems."""
    store = store or open_score_store(workspace)
    result = score_batch(
        workspace,
        as_of=as_of,
        customers=customers,
        actions=actions,
        bundle=bundle,
        progress=progress,
        store=store,
    )
    problems = validate_rows(result.rows)
    if problems:
        raise ContractError(problems)
    store.write_run(result.rows, result.run)
    return result


# ------------------------------------------------------------------------------------------------ triggers
def score_triggers(
    workspace: Workspace,
    *,
    start: datetime,
    end: datetime,
    actions: Sequence[str] | None = None,
    bundle: str | None = None,
    progress: Progress | None = None,
) -> BatchResult:
    """Every trigger (a campaign send) of the triggered actions visible in ``[start, end)``, each scored as of
    the moment it became visible, one row per (customer, trigger) with its ``trigger_id`` and ``as_of``.

    The rows are those a triggered action trains on (:func:`~propensity.labels.labels.build_labels`: the
    trigger's own eligibility rules included), so the scores describe exactly what the model was evaluated on.
    Trigger features read each row's trigger. The decision policy (one next best action per customer) does not
    apply to per-send rows: ``next_best_action`` and ``decision_policy`` are null. Consent is as of ``end``.
    Nothing is written.
    """
    t_start = time.perf_counter()
    spec = workspace.spec
    settings = spec.scoring
    scored_at = datetime.now(UTC)
    start, end = as_utc(start), as_utc(end)
    if end <= start:
        raise BatchScoringError(f"--to ({end.isoformat()}) must be later than --from ({start.isoformat()})")
    model, manifest, _ = _load_model(workspace, bundle)
    trained = _bundle_actions(manifest.actions, spec.actions)
    declared = {a.name: a for a in spec.actions}
    known = {**declared, **trained}
    if actions:
        unknown = [a for a in actions if a not in known]
        if unknown:
            raise BatchScoringError(
                f"unknown action(s) {', '.join(unknown)}; this project scores: {', '.join(sorted(known))}"
            )
        plain = [a for a in actions if known[a].trigger is None]
        if plain:
            raise BatchScoringError(
                f"{', '.join(plain)} has no trigger: --triggers scores triggered actions (respond) per send; "
                "score the others with --as-of"
            )
        wanted = list(actions)
    else:
        wanted = [a for a in dict.fromkeys([*model.action_names, *declared]) if known[a].trigger is not None]
    if not wanted:
        raise BatchScoringError(
            "no triggered action (an action with trigger:, e.g. respond) to score per trigger"
        )
    missing_features = model.encoder_for([f.name for f in spec.features]).missing
    if not workspace.db_path.exists():
        raise BatchScoringError(f"{workspace.root}: no events yet; ingest some first (`propensity ingest`)")
    expiration_at = scored_at + settings.ttl.timedelta
    run_id = new_run_id(scored_at)
    far = datetime(9999, 1, 1, tzinfo=UTC)  # eligibility only: every row counts as matured
    parts: list[pa.Table] = []
    segmentations: dict[str, Segmentation] = {}
    opened = open_event_log(workspace).connection(read_only=True)
    con = opened.__enter__()
    try:
        consent_values = {ch: attribute_values(con, attr, end) for ch, attr in spec.policies.consent.items()}
        for k, a in enumerate(wanted):
            action = known[a]
            rows = build_labels(con, action, [start], until=end, data_end=far, zone=spec.timezone)
            n = rows.num_rows
            spine = rows.select(["customer_id", "as_of", "trigger_id"])
            is_fallback = a not in model.actions or bool(missing_features)
            scores = np.full(n, np.nan)
            codes: list[str | None] = [None] * n
            for lo in range(0, n, settings.batch_size):
                part = spine.slice(lo, settings.batch_size)
                if is_fallback:
                    fb = fallback_scores(con, action, part)
                    scores[lo : lo + part.num_rows] = fb.column("score").to_numpy(zero_copy_only=False)
                    continue
                feats = compute_features(con, spec.features, part)
                x = encode(model, feats)
                m = model.action_names.index(a)
                scores[lo : lo + part.num_rows] = model.probabilities_many(x)[:, m]
                if settings.reason_codes:
                    try:
                        contrib = model.scorer.contributions(x, m)
                        texts = _reason_json(contrib, model.columns, feats, settings.reason_codes)
                        codes[lo : lo + part.num_rows] = texts
                    except ModelFormatError:
                        pass
            if progress is not None:
                progress("score", k + 1, len(wanted))
            seg = find_segments(scores, spec.segments)
            segmentations[a] = seg
            quantiles = None if is_fallback else model.actions[a].score_quantiles
            ids = rows.column("customer_id").to_pylist()
            parts.append(
                pa.table(
                    {
                        "customer_id": rows.column("customer_id"),
                        "action": pa.array([a] * n, pa.string()),
                        "score": pa.array(scores, pa.float64(), from_pandas=True),
                        "percentile": pa.array(
                            percentiles(quantiles, scores), pa.float64(), from_pandas=True
                        ),
                        "segment": pa.array(assign(scores, seg).tolist(), pa.string()),
                        "eligible": pa.array([True] * n, pa.bool_()),
                        "next_best_action": pa.nulls(n, pa.string()),
                        "reason_codes": pa.array(codes, pa.string()),
                        "holdout_group": pa.array(
                            groups_for(spec.experiments.holdout_for(a), ids), pa.string()
                        ),
                        "model_id": pa.array(
                            [FALLBACK_MODEL_ID if is_fallback else f"{model.version}/{a}"] * n, pa.string()
                        ),
                        "model_version": pa.array([model.version] * n, pa.string()),
                        "feature_set_version": pa.array([model.feature_set_version] * n, pa.string()),
                        "scoring_run_id": pa.array([run_id] * n, pa.string()),
                        "scored_at": pa.array([scored_at] * n, UTC_US),
                        "expiration_at": pa.array([expiration_at] * n, UTC_US),
                        "decision_policy": pa.nulls(n, pa.string()),
                        "consent": pa.array(consent_json(consent_values, ids), pa.string()),
                        "fallback": pa.array([is_fallback] * n, pa.bool_()),
                        "as_of": rows.column("as_of").cast(UTC_US),
                        "trigger_id": rows.column("trigger_id").cast(pa.string()),
                    },
                    schema=SCORE_ROW_SCHEMA,
                )
            )
    finally:
        opened.__exit__(None, None, None)
    out = conform(pa.concat_tables(parts)) if parts else SCORE_ROW_SCHEMA.empty_table()
    contract = load_contract()
    run = ScoringRun(
        run_id=run_id,
        scored_at=scored_at,
        expiration_at=expiration_at,
        as_of=end,
        model_version=model.version,
        feature_set_version=model.feature_set_version,
        rows=out.num_rows,
        segment_cuts={a: s.cuts for a, s in segmentations.items()},
        segment_names={a: s.names for a, s in segmentations.items()},
        contract_version=contract.version,
        status="complete",
        details={
            "triggers": {"from": start.isoformat(), "to": end.isoformat()},
            "actions": wanted,
            "meanings": {a: describe_action(known[a], same_time=False) for a in wanted},
            "eligible": {a: int(pc.sum(pc.equal(out.column("action"), a)).as_py() or 0) for a in wanted},
            "customers": len(pc.unique(out.column("customer_id"))) if out.num_rows else 0,
            "fallback_actions": [a for a in wanted if a not in model.actions or missing_features],
            "missing_features": missing_features,
            "seconds": {"total": round(time.perf_counter() - t_start, 3)},
        },
    )
    return BatchResult(run, out)


def write_scores_file(result: BatchResult, path: Path) -> Path:
    """Write a run's rows to a Parquet (or ``.csv``) file for analysis, checked against the data contract first
    (:class:`ContractError` lists the problems; nothing is written). No score store, no gates: gates are for
    publishing (``propensity activate``). The run record goes next to it as ``<file>.run.json``."""
    problems = validate_rows(result.rows)
    if problems:
        raise ContractError(problems)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix.lower() == ".csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(result.rows, tmp)
    else:
        import pyarrow.parquet as pq

        meta = {
            b"scoring_run": orjson.dumps(result.run.to_json()),
            b"contract_version": result.run.contract_version.encode(),
        }
        pq.write_table(result.rows.replace_schema_metadata(meta), tmp, compression="zstd")
    tmp.replace(path)
    record = path.with_name(path.name + ".run.json")
    record.write_text(orjson.dumps(result.run.to_json(), option=orjson.OPT_INDENT_2).decode() + "\n", "utf-8")
    return path
