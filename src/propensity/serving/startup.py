"""Starting a server: the online store rebuilt from the event log and the production model loaded."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path

from propensity.events.log import DuckDBEventLog
from propensity.serving.model import ServingModel
from propensity.serving.service import DEFAULT_TTL, ScoringService
from propensity.serving.store import InMemoryStore
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


def build_service(
    workspace: Workspace, *, model_ref: str | None = None, ttl: timedelta = DEFAULT_TTL
) -> tuple[ScoringService, dict[str, float]]:
    """The scoring service of a workspace, ready to serve, and how long each step took (seconds)."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    store = InMemoryStore(workspace.spec.features)
    if workspace.db_path.exists():
        with DuckDBEventLog(workspace.db_path).connection(read_only=True) as con:
            applied = store.rebuild(con)
        log.info("online store rebuilt from %d events (%d customers)", applied, store.customers)
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
