"""The promotion gate: a candidate may not be worse than production, on the same test window, on any action.

Both bundles score the candidate's stored test split of every action production serves (the training set is
kept with the candidate, so the rows are identical for both). Each scores with its *evaluation* model (the
procedure fitted as of its own test split, which never saw these rows), not its served model: the candidate's
served model was refitted on these very rows and would look better than it is. A format-1 bundle without an
evaluation model scores with its served model. The candidate fails an action when its ROC-AUC is
lower than production's by more than ``training.promotion.auc_tolerance`` or its ECE higher by more than
``ece_tolerance``, or when it lacks an action production has. If production cannot score the candidate's rows
(its features are not in them), the recorded test metrics are compared instead, and the result says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from sklearn.metrics import roc_auc_score

from propensity.config.training import PromotionSettings
from propensity.core.errors import PropensityError
from propensity.registry.bundle import Bundle, CorruptBundleError
from propensity.registry.registry import Registry, RegistryError
from propensity.training.metrics import expected_calibration_error
from propensity.workspace import Workspace


class PromotionRefusedError(PropensityError):
    """The gate refused a promotion; the message lists each failing action and metric."""


@dataclass
class GateCheck:
    action: str
    metric: str
    candidate: float | None
    production: float | None
    tolerance: float
    passed: bool
    basis: str  # "same test window" or "recorded metrics"


@dataclass
class GateResult:
    passed: bool
    checks: list[GateCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "checks": [asdict(c) for c in self.checks], "notes": self.notes}

    def failures(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]


def _same_window(
    workspace: Workspace, candidate: Bundle, production: Bundle, action: str
) -> tuple[dict[str, float], dict[str, float]] | None:
    ts_id = candidate.manifest.training_set
    path = workspace.state_dir / "training" / str(ts_id) / f"{action}.parquet"
    if not ts_id or not path.exists():
        return None
    table = pq.read_table(path)
    test = table.filter(pc.equal(table.column("split"), "test"))
    if test.num_rows == 0 or not set(production.actions[action].encoder.names) <= set(test.column_names):
        return None
    y = test.column("label").to_numpy().astype(float)
    out = []
    for bundle in (candidate, production):
        p = bundle.predict(action, test, evaluation=True)
        auc = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")
        out.append({"roc_auc": auc, "ece": expected_calibration_error(np.asarray(p), y)})
    return out[0], out[1]


def evaluate_gate(
    workspace: Workspace, candidate: Bundle, production: Bundle, settings: PromotionSettings
) -> GateResult:
    result = GateResult(passed=True)
    for action in sorted(production.actions):
        if action not in candidate.actions:
            result.checks.append(
                GateCheck(action, "present", None, None, 0.0, False, "candidate lacks the action")
            )
            continue
        same = _same_window(workspace, candidate, production, action)
        if same is not None:
            cand, prod = same
            basis = "same test window"
        else:
            cand = candidate.manifest.actions[action].metrics["model"]
            prod = production.manifest.actions[action].metrics["model"]
            basis = "recorded metrics"
            result.notes.append(
                f"{action}: production cannot score the candidate's test rows; compared recorded metrics"
            )
        auc_ok = cand["roc_auc"] >= prod["roc_auc"] - settings.auc_tolerance
        ece_ok = cand["ece"] <= prod["ece"] + settings.ece_tolerance
        result.checks.append(
            GateCheck(
                action, "roc_auc", cand["roc_auc"], prod["roc_auc"], settings.auc_tolerance, auc_ok, basis
            )
        )
        result.checks.append(
            GateCheck(action, "ece", cand["ece"], prod["ece"], settings.ece_tolerance, ece_ok, basis)
        )
    result.passed = not result.failures()
    return result


def promote(
    workspace: Workspace, ref: str, *, force: bool = False, reason: str | None = None, by: str | None = None
) -> GateResult:
    """Promote a candidate to production through the gate; ``force`` needs a ``reason`` (recorded)."""
    if force and not (reason and reason.strip()):
        raise RegistryError("--force needs --reason: say why the gate is overridden (it is recorded)")
    registry = Registry(workspace)
    bundle_id = registry.resolve(ref)
    candidate = registry.load(bundle_id)  # verified first: a corrupted candidate never moves the pointer
    current = registry.production()
    if current is None:
        gate = GateResult(passed=True, notes=["no production bundle yet: nothing to compare with"])
    elif current == bundle_id:
        raise RegistryError(f"{bundle_id} is already in production")
    if current is not None and not force and registry.stage(bundle_id) == "archived":
        raise RegistryError(
            f"{bundle_id} is archived, not a candidate: `propensity models rollback` returns to the previous "
            "production bundle; to bring this one back, promote it with --force --reason '...' (recorded)"
        )
    if current is not None:
        try:
            production = registry.load(current)
        except CorruptBundleError as exc:
            # The gate cannot compare with a bundle it cannot load; recovery must still be possible.
            if not force:
                raise PromotionRefusedError(
                    f"production {current} is corrupted, so the gate cannot compare {bundle_id} with it ({exc}). "
                    "To replace it, promote a healthy bundle over it: --force --reason '...' (recorded)"
                ) from None
            gate = GateResult(
                passed=False, notes=[f"production {current} is corrupted; the gate could not compare: {exc}"]
            )
        else:
            gate = evaluate_gate(workspace, candidate, production, workspace.spec.training.promotion)
    if not gate.passed and not force:
        lines = [
            f"{c.action} {c.metric}: candidate {_fmt(c.candidate)} vs production {_fmt(c.production)} "
            f"(tolerance {c.tolerance}, {c.basis})"
            for c in gate.failures()
        ]
        raise PromotionRefusedError(
            f"{bundle_id} is worse than production {current} on: "
            + "; ".join(lines)
            + ". Fix the model, or override with --force --reason '...'"
        )
    registry.set_production(
        bundle_id, forced=force and not gate.passed, reason=reason, gate=gate.to_json(), by=by,
        allow_archived=force,
    )  # fmt: skip
    return gate


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"
