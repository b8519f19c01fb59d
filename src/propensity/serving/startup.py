"""Starting a server: the online store built (in memory or Redis) and loaded from the event log, the production
model loaded."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path

from propensity.config.errors import PropensityError
from propensity.events.log import DuckDBEventLog
from propensity.serving.model import ServingModel
from propensity.serving.service import DEFAULT_TTL, ScoringService
from propensity.serving.settings import ServingSettings
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


def build_store(workspace: Workspace, online_store: str | None = None) -> OnlineStore:
    """The online store the spec's ``serving`` section asks for, or ``online_store`` ("memory" or a Redis URL,
    e.g. from ``--store``) instead; empty (see :meth:`OnlineStore.rebuild`)."""
    settings = workspace.spec.serving
    target = settings.online_store
    if online_store is not None:
        try:
            target = ServingSettings.model_validate({"online_store": online_store}).online_store
        except ValueError:
            raise PropensityError(
                f"--store {online_store!r}: use 'memory' or a Redis URL such as redis://127.0.0.1:6379/0"
            ) from None
    if target == "memory":
        return InMemoryStore(workspace.spec.features)
    from propensity.serving.redis_store import RedisStore

    return RedisStore(
        workspace.spec.features, target, prefix=settings.redis_prefix, timeout=settings.redis_timeout
    )


def build_service(
    workspace: Workspace,
    *,
    model_ref: str | None = None,
    ttl: timedelta = DEFAULT_TTL,
    online_store: str | None = None,
) -> tuple[ScoringService, dict[str, float]]:
    """The scoring service of a workspace, ready to serve, and how long each step took (seconds).
    ``online_store`` overrides the spec's ``serving.online_store``."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    store = build_store(workspace, online_store)
    if workspace.db_path.exists():
        # Under the workspace lock: another server process on this workspace may be appending live events, and
        # DuckDB refuses a reader while another process writes.
        with workspace.write_lock(), DuckDBEventLog(workspace.db_path).connection(read_only=True) as con:
            applied = store.rebuild(con)
        log.info("online store loaded: %d events applied", applied)
    timings["store_rebuild"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    model = production_model(workspace, model_ref)
    timings["model_load"] = time.perf_counter() - t1
    service = ScoringService(store, model, ttl=ttl)
    if model is not None:
        missing = model.encoder_for(store.feature_names).missing
        if missing:
            log.warning(
                "model %s uses %d features the project no longer declares (scored as missing): %s",
                model.version, len(missing), ", ".join(missing[:10]),
            )  # fmt: skip
    return service, timings
