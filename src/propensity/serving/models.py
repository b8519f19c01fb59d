"""Model moves for a running server: promote through the gate or roll back, then load the model to swap in.

A promotion or a rollback loads (verifies and compiles) its bundle *before* the registry pointer moves, so a
bundle that cannot be served is refused without changing production. Both run in a worker thread; the caller swaps the
returned model in (one reference assignment: in-flight requests finish on the model they started with).
"""

from __future__ import annotations

from typing import Any

from propensity.core.errors import PropensityError
from propensity.scoring.model import ServingModel, load_model
from propensity.workspace import Workspace


class ModelMoveError(PropensityError):
    """A promotion or rollback that did not happen; ``status`` and ``code`` are for the HTTP answer."""

    def __init__(self, message: str, *, status: int = 409, code: str = "conflict") -> None:
        super().__init__(message)
        self.status, self.code = status, code


def registry_entries(workspace: Workspace) -> list[dict[str, Any]]:
    from propensity.registry.registry import Registry

    return [
        {"model_version": e.id, "stage": e.stage, "created_at": e.created_at,
         "actions": sorted(e.manifest.actions) if e.manifest is not None else []}
        for e in Registry(workspace).entries()
    ]  # fmt: skip


def promote_and_load(
    workspace: Workspace, ref: str, *, force: bool = False, reason: str | None = None, by: str | None = None
) -> tuple[ServingModel, dict[str, Any]]:
    """Load ``ref``, then promote it through the gate; returns the model and the gate's result."""
    from propensity.registry.bundle import BundleNotFoundError, CorruptBundleError
    from propensity.registry.gate import PromotionRefusedError, promote
    from propensity.registry.registry import Registry, RegistryError

    registry = Registry(workspace)
    try:
        bundle_id = registry.resolve(ref)
        model = load_model(workspace, registry.path(bundle_id))
        gate = promote(workspace, bundle_id, force=force, reason=reason, by=by)
    except BundleNotFoundError as exc:
        raise ModelMoveError(str(exc), status=404, code="not_found") from None
    except PromotionRefusedError as exc:
        raise ModelMoveError(str(exc), code="promotion_refused") from None
    except (RegistryError, CorruptBundleError) as exc:
        raise ModelMoveError(str(exc)) from None
    except PropensityError as exc:  # e.g. a model the compiled scorer cannot evaluate
        raise ModelMoveError(str(exc), status=422, code="unservable_model") from None
    return model, gate.to_json()


def rollback_and_load(
    workspace: Workspace, *, reason: str | None = None, by: str | None = None
) -> ServingModel:
    """Load the bundle a rollback would go to (verifying and compiling it), then move production back one step
    in the registry (recording ``reason`` and ``by``). A bundle that cannot be loaded leaves production as it
    was; so does a registry that changed between the load and the move."""
    from propensity.registry.bundle import CorruptBundleError
    from propensity.registry.registry import Registry, RegistryError

    registry = Registry(workspace)
    try:
        current, to = registry.rollback_target()
        model = load_model(workspace, registry.path(to))
        registry.rollback(reason=reason, by=by, expect=(current, to))
    except (RegistryError, CorruptBundleError) as exc:
        raise ModelMoveError(str(exc)) from None
    except PropensityError as exc:  # e.g. a model the compiled scorer cannot evaluate
        raise ModelMoveError(str(exc), status=422, code="unservable_model") from None
    return model


def load_canary(workspace: Workspace, ref: str | None) -> ServingModel:
    """Load the bundle ``ref`` (an id or prefix), or the newest candidate when ``ref`` is None, for a canary."""
    from propensity.registry.bundle import BundleNotFoundError, CorruptBundleError
    from propensity.registry.registry import Registry, RegistryError

    registry = Registry(workspace)
    try:
        if ref is None:
            candidates = [e for e in registry.entries() if e.stage == "candidate"]
            if not candidates:
                raise ModelMoveError("there is no candidate bundle to canary; train one or name a bundle")
            ref = max(candidates, key=lambda e: e.created_at).id
        bundle_id = registry.resolve(ref)
        if bundle_id == registry.production():
            raise ModelMoveError(f"{bundle_id} is already in production; a canary needs another bundle")
        return load_model(workspace, registry.path(bundle_id))
    except BundleNotFoundError as exc:
        raise ModelMoveError(str(exc), status=404, code="not_found") from None
    except (RegistryError, CorruptBundleError) as exc:
        raise ModelMoveError(str(exc)) from None
    except PropensityError as exc:
        if isinstance(exc, ModelMoveError):
            raise
        raise ModelMoveError(str(exc), status=422, code="unservable_model") from None
