"""Starting a server: the online store built (in memory or Redis) and loaded from the event log, the production
model loaded."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from propensity.config.actions import Action
from propensity.config.features import AnyFeature
from propensity.config.serving import ServingSettings
from propensity.core.errors import PropensityError
from propensity.events.log import open_event_log
from propensity.scoring.model import ServingModel
from propensity.serving.action_rules import ActionRules
from propensity.serving.service import ScoringService
from propensity.serving.store import InMemoryStore, OnlineStore
from propensity.workspace import Workspace

log = logging.getLogger(__name__)


def production_model(workspace: Workspace, ref: str | None = None) -> ServingModel | None:
    """The bundle ``ref`` (an id or prefix) or the registry's production bundle, compiled; None if there is none."""
    from propensity.registry.registry import Registry

    registry = Registry(workspace)
    bundle_id = registry.resolve(ref) if ref else registry.production()
    if bundle_id is None:
        return None
    return ServingModel.from_bundle_dir(Path(registry.path(bundle_id)))


def build_store(
    workspace: Workspace, online_store: str | None = None, extra_features: Sequence[AnyFeature] = ()
) -> OnlineStore:
    """The online store the spec's ``serving`` section asks for, or ``online_store`` ("memory" or a Redis URL,
    e.g. from ``--store``) instead; empty (see :meth:`OnlineStore.rebuild`). It computes the project's features
    plus ``extra_features`` (the eligibility and fallback rules' inputs)."""
    settings = workspace.spec.serving
    target = settings.online_store
    if online_store is not None:
        try:
            target = ServingSettings.model_validate({"online_store": online_store}).online_store
        except ValueError:
            raise PropensityError(
                f"--store {online_store!r}: use 'memory' or a Redis URL such as redis://127.0.0.1:6379/0"
            ) from None
    features = [*workspace.spec.features, *extra_features]
    if target == "memory":
        return InMemoryStore(features)
    from propensity.serving.redis_store import RedisStore

    return RedisStore(features, target, prefix=settings.redis_prefix, timeout=settings.redis_timeout)


def served_actions(workspace: Workspace, models: Sequence[ServingModel | None]) -> list[Action]:
    """The actions a server answers: each bundle's actions as trained, then those the project declares."""
    by_name: dict[str, Action] = {}
    for model in models:
        if model is None:
            continue
        for action_model in model.actions.values():
            action = action_model.action()
            if action is not None:
                by_name.setdefault(action.name, action)
    for action in workspace.spec.actions:
        by_name.setdefault(action.name, action)
    return list(by_name.values())


def build_service(
    workspace: Workspace,
    *,
    model_ref: str | None = None,
    ttl: timedelta | None = None,
    online_store: str | None = None,
) -> tuple[ScoringService, dict[str, float]]:
    """The scoring service of a workspace, ready to serve, and how long each step took (seconds).

    ``online_store`` overrides the spec's ``serving.online_store``, ``ttl`` its ``serving.score_ttl``. A canary
    declared in ``serving.canary`` is loaded too.
    """
    settings = workspace.spec.serving
    timings: dict[str, float] = {}
    t1 = time.perf_counter()
    model = production_model(workspace, model_ref)
    canary = None
    if settings.canary.share > 0:
        from propensity.serving.models import ModelMoveError, load_canary

        try:
            canary = load_canary(workspace, settings.canary.bundle)
        except ModelMoveError as exc:
            raise PropensityError(f"serving.canary: {exc}") from None
    timings["model_load"] = time.perf_counter() - t1
    t0 = time.perf_counter()
    rules = ActionRules(served_actions(workspace, [model, canary]))
    store = build_store(workspace, online_store, rules.features)
    if workspace.db_path.exists():
        # Under the workspace lock: another server process on this workspace may be appending live events, and
        # DuckDB refuses a reader while another process writes.
        with workspace.write_lock(), open_event_log(workspace).connection(read_only=True) as con:
            applied = store.rebuild(con)
        log.info("online store loaded: %d events applied", applied)
    timings["store_rebuild"] = time.perf_counter() - t0
    service = ScoringService(store, model, ttl=ttl or settings.score_ttl.timedelta, rules=rules)
    if canary is not None:
        service.set_canary(canary, settings.canary.share)
    if model is not None:
        missing = model.encoder_for(store.feature_names).missing
        if missing:
            log.warning(
                "model %s uses %d features the project no longer declares; its actions are served by the "
                "rule-based fallback until a model trained on the current features is promoted: %s",
                model.version, len(missing), ", ".join(missing[:10]),
            )  # fmt: skip
    return service, timings
