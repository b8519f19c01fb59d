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

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from propensity.config.actions import Action, describe_action
from propensity.core.clock import as_utc
from propensity.core.contract import ContractError, load_contract, validate_rows
from propensity.core.errors import PropensityError
from propensity.core.holdout import groups_for
from propensity.core.manifest import ActionManifest, BundleManifest
from propensity.core.score_row import SCORE_ROW_SCHEMA, UTC_US
from propensity.events.clock import DataClock
from propensity.events.log import open_event_log
from propensity.events.spark import engine_of
from propensity.features.offline import compute_features
from propensity.labels.labels import build_labels
from propensity.scoring.compiled import ModelFormatError
from propensity.scoring.fallback import fallback_scores
from propensity.scoring.model import ServingModel
from propensity.scoring.policy import (
    DecisionContext,
    attribute_values,
    consent_column,
    consent_json,
    decide,
    recent_activations,
    suppression_lists,
)
from propensity.scoring.population import eligibility, eligible_customers, known_customers
from propensity.scoring.reasons import reason_codes, reason_json
from propensity.scoring.rows import (
    FALLBACK_MODEL_ID,
    ActionScores,
    RunStamp,
    holdout_groups,
    repeat,
    score_rows,
)
from propensity.scoring.score_store import ScoreStore, ScoringRun, conform, new_run_id, open_score_store
from propensity.scoring.scores import encode, percentiles
from propensity.scoring.segments import Segmentation, assign, find_segments
from propensity.workspace import Workspace

Progress = Callable[[str, int, int], None]
__all__ = [
    "FALLBACK_MODEL_ID",
    "BatchResult",
    "BatchScoringError",
    "eligible_customers",
    "encode",
    "known_customers",
    "percentiles",
    "score_and_store",
    "score_batch",
    "score_triggers",
    "write_scores_file",
]


class BatchScoringError(PropensityError):
    """Batch scoring cannot run (no events, no production bundle, an unknown action)."""


@dataclass(frozen=True)
class BatchResult:
    run: ScoringRun
    rows: pa.Table
    # Supplied rows (``score --rows``): a sample of their features, scores and outcomes (when the rows carry the
    # label), kept with the run so the bundle can be monitored (see propensity.registry.table_samples).
    monitoring_sample: pa.Table | None = None


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
    manifest = read_manifest(path)
    table = manifest.to_json().get("table")
    if table:
        # A labelled table's model reads the table's columns, not features computed from events.
        raise BatchScoringError(
            f"bundle {bundle_id} was trained on the labelled table {table.get('name')!r}: its features are that "
            "table's columns, not the event log's; score rows that carry them with `propensity score --rows FILE`"
        )
    return ServingModel.from_bundle_dir(path), manifest, path


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
    (default: the project's clock, :class:`~propensity.events.clock.DataClock`: now, or the log's end under
    ``clock: data``) with the production bundle (or ``bundle``, an id or prefix). Nothing is written.

    ``store`` (default: the workspace's) is only read, for the frequency cap's history.
    """
    t_start, c_start = time.perf_counter(), time.process_time()
    timings: dict[str, float] = {}
    spec = workspace.spec
    settings = spec.scoring
    scored_at = datetime.now(UTC)
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

    cpu: dict[
        str, float
    ] = {}  # CPU seconds of this process (all threads) per stage: what load does not inflate
    c_last = [c_start]

    def lap(stage: str, t0: float) -> float:
        now, c_now = time.perf_counter(), time.process_time()
        timings[stage] = timings.get(stage, 0.0) + now - t0
        cpu[stage] = cpu.get(stage, 0.0) + c_now - c_last[0]
        c_last[0] = c_now
        return now

    t0 = lap("load_model", t_start)
    threads = os.cpu_count() or 1
    opened = open_event_log(workspace).connection(read_only=True)
    con = opened.__enter__()
    try:
        # The project's clock: an explicit as_of, else now (clock: live) or the log's end (clock: data).
        clock = DataClock.of(con, spec, now=scored_at)
        as_of = clock.as_of(as_of)
        clock = clock.seen_at(con, as_of)
        # 1. Who: the customers known as of the run, and each action's eligible ones (one query for all
        # actions without a trigger).
        if customers is not None:
            ids = pa.array(list(dict.fromkeys(customers)), pa.string())
        else:
            ids = known_customers(con, as_of)
        n = len(ids)
        t0 = lap("customers", t0)
        eligible = eligibility(con, ids, definitions, as_of, zone=spec.timezone, known=customers is None)
        t0 = lap("eligibility", t0)
        consent = consent_column(con, spec.policies.consent, ids, as_of)
        suppressed = suppression_lists(con, spec.policies, as_of, spec.root)
        holdouts: dict[str, pa.Array] = {}
        by_experiment: dict[str | None, pa.Array] = {}
        for a in wanted:
            # One experiment usually covers every action: hash each customer once per experiment.
            holdout = spec.experiments.holdout_for(a)
            key = None if holdout is None else holdout.name
            if key not in by_experiment:
                by_experiment[key] = holdout_groups(con, ids, holdout)
            holdouts[a] = by_experiment[key]
        t0 = lap("policy_inputs", t0)
        # 2. Offline features at the cutoff (one time for every customer: the single-cutoff plan) and the
        # compiled scorer on every core; the fallback's rules for the actions without a model.
        scores = {a: np.full(n, np.nan) for a in wanted}
        model_index = {a: i for i, a in enumerate(model.action_names)}
        by_model = not missing_features and n > 0 and any(a in model_index for a in wanted)
        inputs = np.zeros((0, max(1, len(model.columns))))
        feats = pa.table({})
        for k in ("features", "model", "fallback"):
            timings[k] = 0.0
        if by_model:
            spine = pa.table({"customer_id": ids, "as_of": repeat(as_of, n, UTC_US)})
            if engine_of(workspace) == "spark":
                # Features and model scores in one Spark job: executors run scores.score_record_batch.
                from propensity.scoring.spark import spark_features_and_scores

                feats, probs = spark_features_and_scores(
                    workspace, bundle_dir, model, spec.features, spine, con
                )
                t0 = lap("features", t0)
                inputs = encode(model, feats) if settings.reason_codes else inputs
            else:
                feats = compute_features(con, spec.features, spine, chunk_rows=settings.batch_size)
                t0 = lap("features", t0)
                inputs = encode(model, feats)
                probs = model.probabilities_many(inputs, threads=threads)
            for a in wanted:
                if a in model_index:
                    scores[a] = probs[:, model_index[a]]
            del probs
            t0 = lap("model", t0)
            tick("score", n, n)
        for a in fallback_actions:
            for lo in range(0, n, settings.batch_size):
                part = ids.slice(lo, settings.batch_size)
                spine = pa.table({"customer_id": part, "as_of": repeat(as_of, len(part), UTC_US)})
                fb = fallback_scores(con, definitions[a], spine)
                scores[a][lo : lo + len(part)] = fb.column("score").to_numpy(zero_copy_only=False)
        t0 = lap("fallback", t0)
    finally:
        opened.__exit__(None, None, None)

    # 3. Rows, segments and percentiles vectorised over Arrow, then the decision policy.
    stamp = RunStamp(run_id, scored_at, expiration_at, as_of, model.version, model.feature_set_version)
    per_action = [
        ActionScores(
            a,
            scores[a],
            eligible[a],
            a in fallback_actions,
            # Fallback scores are ranks, not the model's calibrated scale: no percentile against its quantiles.
            model.actions[a].score_quantiles if a in model.actions and a not in fallback_actions else None,
        )
        for a in wanted
    ]
    rows, segmentations = score_rows(
        ids, per_action, stamp=stamp, segments=spec.segments, holdouts=holdouts, consent=consent
    )
    del per_action, scores
    t0 = lap("rows", t0)
    history = recent_activations(store or open_score_store(workspace), spec.policies, scored_at)
    rows = decide(rows, spec.policies, context=DecisionContext(suppressed, history))
    t0 = lap("decisions", t0)
    # 4. Reason codes, only for the rows that need them (by default each customer's next best action).
    if by_model and settings.reason_codes:
        column = reason_codes(model, rows, wanted, inputs, feats, settings, threads=threads)
        rows = rows.set_column(rows.column_names.index("reason_codes"), "reason_codes", column)
    del inputs, feats
    rows = conform(rows)
    t0 = lap("reason_codes", t0)
    timings["total"] = time.perf_counter() - t_start
    cpu["total"] = time.process_time() - c_start
    run = completed_run(
        stamp,
        rows,
        segmentations,
        {
            "customers": n,
            "actions": wanted,
            "meanings": {a: describe_action(d, same_time=as_of == scored_at) for a, d in definitions.items()},
            "eligible": {a: int(eligible[a].sum()) for a in wanted},
            "segments": {a: s.to_json() for a, s in segmentations.items()},
            "fallback_actions": fallback_actions,
            "data_clock": clock.to_json(as_of),
            "stale_data": clock.warning(as_of),
            "missing_features": missing_features,
            "seconds": {k: round(v, 3) for k, v in timings.items()},
            "cpu_seconds": {k: round(v, 3) for k, v in cpu.items()},
        },
    )
    return BatchResult(run, rows)


def completed_run(
    stamp: RunStamp, rows: pa.Table, segmentations: Mapping[str, Segmentation], details: Mapping[str, Any]
) -> ScoringRun:
    """The record of a finished run: its stamp, row count, segment cuts and the stage's own details."""
    return ScoringRun(
        run_id=stamp.run_id,
        scored_at=stamp.scored_at,
        expiration_at=stamp.expiration_at,
        as_of=stamp.as_of,
        model_version=stamp.model_version,
        feature_set_version=stamp.feature_set_version,
        rows=rows.num_rows,
        segment_cuts={a: s.cuts for a, s in segmentations.items()},
        segment_names={a: s.names for a, s in segmentations.items()},
        contract_version=load_contract().version,
        status="complete",
        details=details,
    )


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
                        texts = reason_json(contrib, model.columns, feats, settings.reason_codes)
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
    run = completed_run(
        RunStamp(run_id, scored_at, expiration_at, end, model.version, model.feature_set_version),
        out,
        segmentations,
        {
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
