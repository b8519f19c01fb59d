"""``retrain``: train a challenger on fresh data, compare it with production on the latest matured window, and
promote it only if it is not worse; every decision is recorded with its evidence.

The comparison window is the challenger's test split: the most recent cutoffs whose label windows have closed,
which the challenger neither trained nor calibrated on (``retraining.window`` narrows it to its last span).
Both bundles score the same rows, each from its own feature definitions (recomputed point in time for
production when they differ), and each with its evaluation model (the procedure as of its own test split), since
the challenger's served model was refitted on these rows; whatever kind each is (linear, LightGBM, blend). The rule is the promotion gate's (:mod:`propensity.registry.gate`): for every
action production serves, the challenger's ROC-AUC may be at most ``auc_tolerance`` lower and its ECE at most
``ece_tolerance`` higher, and it must not lack an action.

Triggers: ``retraining.every`` (the last recorded retrain is that old) and ``retraining.on_drift_alert`` (the
latest monitoring run has an alert newer than the last retrain). A forced run (``propensity retrain``) ignores
them. Decisions go to ``.propensity/retraining/<id>.json`` and the ``retrain_decisions`` table.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import TypeAdapter
from sklearn.metrics import roc_auc_score

from propensity.config.features import FeatureDefinition
from propensity.config.retraining import RetrainSettings
from propensity.config.training import PromotionSettings
from propensity.core.errors import PropensityError
from propensity.events.log import open_event_log
from propensity.registry.bundle import Bundle
from propensity.registry.gate import GateCheck
from propensity.registry.registry import Registry
from propensity.retraining.history import last_decision_time, record_decision
from propensity.retraining.triggers import latest_monitor_run, schedule_due, should_retrain
from propensity.training.metrics import expected_calibration_error
from propensity.workspace import Workspace

Train = Callable[[Workspace], str]
BASIS = "latest matured window"

PROMOTED, REFUSED, UNCHANGED, FIRST, NOT_DUE, FAILED, WOULD_PROMOTE = (
    "promoted", "refused", "unchanged", "first-production", "not-due", "failed", "would-promote",
)  # fmt: skip


class RetrainError(PropensityError):
    """A retrain that cannot run (no rows to compare on, an unreadable training set)."""


@dataclass
class RetrainDecision:
    """What one retrain decided and why. ``outcome`` is one of promoted, refused, unchanged (the challenger is
    the production bundle itself), first-production, not-due, failed or would-promote (a dry run that passed;
    dry runs promote nothing)."""

    id: str
    decided_at: str
    trigger: str | None
    outcome: str
    production: str | None = None
    challenger: str | None = None
    promoted: bool = False
    dry_run: bool = False
    window: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c["passed"] for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        failing = [f"{c['action']} {c['metric']}" for c in self.checks if not c["passed"]]
        tail = f" (failed: {', '.join(failing)})" if failing else ""
        dry = "dry run: " if self.dry_run else ""
        return f"{dry}{self.outcome}: challenger {self.challenger} vs production {self.production}{tail}"


def _new_id(now: datetime) -> str:
    return f"rt-{now.astimezone(UTC):%Y%m%dT%H%M%S}Z-{secrets.token_hex(3)}"


def _tolerances(workspace: Workspace) -> PromotionSettings:
    base = workspace.spec.training.promotion
    s = workspace.spec.retraining
    return PromotionSettings(
        auc_tolerance=base.auc_tolerance if s.auc_tolerance is None else s.auc_tolerance,
        ece_tolerance=base.ece_tolerance if s.ece_tolerance is None else s.ece_tolerance,
    )


# -------------------------------------------------------------------------------------------- the window
def _window_rows(workspace: Workspace, challenger: Bundle, action: str, window: timedelta | None) -> pa.Table:
    """The challenger's test rows of ``action`` (optionally only its last ``window``): labels and features."""
    ts_id = challenger.manifest.training_set
    path = workspace.state_dir / "training" / str(ts_id) / f"{action}.parquet"
    if not ts_id or not path.exists():
        raise RetrainError(
            f"{action}: the challenger's training set {ts_id} is not stored under .propensity/training; "
            "retrain again (it is written by training)"
        )
    table = pq.read_table(path)
    test = table.filter(pc.equal(table.column("split"), "test"))
    if window is not None and test.num_rows:
        last = pc.max(test.column("as_of")).as_py()
        test = test.filter(
            pc.greater(test.column("as_of"), pa.scalar(last - window, test.schema.field("as_of").type))
        )
    return test


def _definitions(bundle: Bundle) -> list[Any]:
    return list(TypeAdapter(list[FeatureDefinition]).validate_python(bundle.manifest.features))


def _production_rows(
    workspace: Workspace, rows: pa.Table, challenger: Bundle, production: Bundle
) -> pa.Table:
    """``rows`` with production's features: reused where the definitions are the same, else recomputed."""
    same = {f["name"]: f for f in challenger.manifest.features}
    needed = production.manifest.features
    if all(same.get(f["name"]) == f for f in needed):
        return rows
    from propensity.features.offline import compute_features

    spine = rows.select(["customer_id", "as_of"])
    with workspace.write_lock(), open_event_log(workspace).connection() as con:
        feats: pa.Table = compute_features(con, _definitions(production), spine)
    return feats


def _metrics(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    auc = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")
    return {
        "roc_auc": auc,
        "ece": expected_calibration_error(np.asarray(p, dtype=np.float64), y),
        "brier": float(np.mean((p - y) ** 2)) if len(y) else float("nan"),
        "mean_score": float(np.mean(p)) if len(y) else float("nan"),
    }


def compare(
    workspace: Workspace,
    challenger: Bundle,
    production: Bundle,
    tolerances: PromotionSettings,
    *,
    window: timedelta | None = None,
) -> tuple[list[GateCheck], dict[str, Any], dict[str, Any], list[str]]:
    """Score both bundles on the latest matured window; return (checks, metrics, window, notes)."""
    checks: list[GateCheck] = []
    metrics: dict[str, Any] = {}
    span: dict[str, Any] = {}
    notes: list[str] = []
    for action in sorted(production.actions):
        if action not in challenger.actions:
            checks.append(GateCheck(action, "present", None, None, 0.0, False, "challenger lacks the action"))
            continue
        rows = _window_rows(workspace, challenger, action, window)
        y = rows.column("label").to_numpy().astype(np.float64)
        if rows.num_rows == 0 or not 0 < y.sum() < len(y):
            raise RetrainError(
                f"{action}: the latest matured window has {rows.num_rows} row(s) with {int(y.sum())} positive(s); "
                "both classes are needed to compare models (widen retraining.window or wait for more data)"
            )
        cand = _metrics(challenger.predict(action, rows, evaluation=True), y)
        prod = _metrics(
            production.predict(
                action, _production_rows(workspace, rows, challenger, production), evaluation=True
            ),
            y,
        )
        metrics[action] = {"challenger": cand, "production": prod}
        as_of = rows.column("as_of")
        span[action] = {
            "first_cutoff": pc.min(as_of).as_py().isoformat(),
            "last_cutoff": pc.max(as_of).as_py().isoformat(),
            "rows": rows.num_rows,
            "positives": int(y.sum()),
        }
        checks.append(GateCheck(action, "roc_auc", cand["roc_auc"], prod["roc_auc"], tolerances.auc_tolerance,
                                cand["roc_auc"] >= prod["roc_auc"] - tolerances.auc_tolerance, BASIS))  # fmt: skip
        checks.append(GateCheck(action, "ece", cand["ece"], prod["ece"], tolerances.ece_tolerance,
                                cand["ece"] <= prod["ece"] + tolerances.ece_tolerance, BASIS))  # fmt: skip
    for action in sorted(set(challenger.actions) - set(production.actions)):
        notes.append(f"{action}: new in the challenger; production has nothing to compare with")
    return checks, metrics, span, notes


# -------------------------------------------------------------------------------------------- triggers
def due(workspace: Workspace, *, now: datetime | None = None) -> str | None:
    """Why a retrain is due now (a schedule or a drift alert), or None."""
    settings: RetrainSettings = workspace.spec.retraining
    now = now or datetime.now(UTC)
    last = last_decision_time(workspace)
    if settings.on_drift_alert:
        reason = should_retrain(latest_monitor_run(workspace), since=last)
        if reason:
            return reason
    if settings.every is not None:
        return schedule_due(settings.every.timedelta, last, now)
    return None


# -------------------------------------------------------------------------------------------- retrain
def _default_train(workspace: Workspace) -> str:
    from propensity.registry.train import train_project

    return train_project(workspace).bundle_id


def retrain(
    workspace: Workspace,
    *,
    force: bool = False,
    dry_run: bool = False,
    trigger: str | None = None,
    train: Train | None = None,
    now: datetime | None = None,
) -> RetrainDecision:
    """Retrain if due (always when ``force``), compare, promote if the gate passes, record the decision.

    ``train(workspace) -> bundle id`` builds the challenger (default: :func:`train_project` on the current
    data). A ``dry_run`` compares and records but promotes nothing. A run that is not due returns a
    ``not-due`` decision and records nothing.
    """
    now = now or datetime.now(UTC)
    reason = trigger or ("manual" if force else due(workspace, now=now))
    decision = RetrainDecision(_new_id(now), now.isoformat(), reason, NOT_DUE, dry_run=dry_run)
    if reason is None:
        return decision
    registry = Registry(workspace)
    decision.production = registry.production()
    try:
        decision.challenger = (train or _default_train)(workspace)
    except PropensityError as exc:
        decision.outcome = FAILED
        decision.notes.append(f"training failed: {exc}")
        record_decision(workspace, decision.to_json())
        raise
    if decision.production is None:
        decision.outcome = FIRST
        decision.notes.append("no production bundle yet: nothing to compare with")
    elif decision.challenger == decision.production:
        decision.outcome = UNCHANGED
        decision.notes.append("training produced the production bundle itself (same data, same code)")
    else:
        window = workspace.spec.retraining.window
        try:
            checks, metrics, span, notes = compare(
                workspace, registry.load(decision.challenger), registry.load(decision.production),
                _tolerances(workspace), window=window.timedelta if window else None,
            )  # fmt: skip
        except PropensityError as exc:
            decision.outcome = FAILED
            decision.notes.append(f"comparison failed: {exc}")
            record_decision(workspace, decision.to_json())
            raise
        decision.checks = [asdict(c) for c in checks]
        decision.metrics, decision.window = metrics, span
        decision.notes.extend(notes)
        decision.outcome = PROMOTED if decision.passed else REFUSED
    stage = next((e.stage for e in registry.entries() if e.id == decision.challenger), "candidate")
    if decision.outcome in (PROMOTED, FIRST) and stage != "candidate":
        # Training reproduced a bundle that was production before; only a rollback moves the pointer back.
        decision.outcome = REFUSED
        decision.notes.append(
            f"the challenger is {stage} (identical to an earlier bundle); use `propensity models rollback` instead"
        )
    if decision.outcome in (PROMOTED, FIRST) and not dry_run:
        gate = {
            "passed": True,
            "checks": decision.checks,
            "notes": [f"retrain {decision.id}", *decision.notes],
        }
        try:  # the registry verifies the challenger before the pointer moves
            registry.set_production(decision.challenger, reason=f"retrain {decision.id}: {reason}", gate=gate)
        except PropensityError as exc:
            decision.outcome = FAILED
            decision.notes.append(f"promotion failed, production unchanged: {exc}")
            record_decision(workspace, decision.to_json())
            raise
        decision.promoted = True
    elif decision.outcome in (PROMOTED, FIRST):
        decision.outcome = WOULD_PROMOTE
    record_decision(workspace, decision.to_json())
    return decision
