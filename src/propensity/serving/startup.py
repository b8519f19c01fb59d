"""Starting a server: the online store built (in memory or Redis) and loaded from the event log, the production
model loaded."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from propensity.config.actions import Action
from propensity.config.features import AnyFeature
from propensity.config.serving import ServingSettings
from propensity.core.errors import PropensityError
from propensity.events.clock import DataClock
from propensity.events.live import EventIdIndex
from propensity.events.log import open_moved
from propensity.scoring.model import ServingModel, load_model
from propensity.serving.action_rules import ActionRules
from propensity.serving.live import log_watermark
from propensity.serving.service import ScoringService
from propensity.serving.snapshot import load_snapshot, snapshot_dir
from propensity.serving.store import InMemoryStore, OnlineStore
from propensity.workspace import Workspace

log = logging.getLogger(__name__)
_NEG = -(1 << 62)


def production_model(workspace: Workspace, ref: str | None = None) -> ServingModel | None:
    """The bundle ``ref`` (an id or prefix) or the registry's production bundle, compiled; None if there is none."""
    from propensity.registry.bundle import CorruptBundleError
    from propensity.registry.registry import Registry

    registry = Registry(workspace)
    bundle_id = registry.resolve(ref) if ref else registry.production()
    if bundle_id is None:
        return None
    try:
        return load_model(workspace, Path(registry.path(bundle_id)))
    except CorruptBundleError as exc:
        if ref:
            raise
        raise CorruptBundleError(
            f"the production bundle cannot be served: {exc} Recover from the command line: "
            "`propensity models rollback`, or promote a healthy bundle (`propensity models list`) over it with "
            "`propensity models promote ID --force --reason '...'`"
        ) from None


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


@dataclass
class StartupReport:
    """How the online store started: from a snapshot plus the log's tail, from the whole log, or (Redis) from the
    state already there plus what the log gained. ``events_replayed`` were applied at start."""

    how: str  # "snapshot", "log", "redis", "empty"
    events_replayed: int = 0
    seconds: float = 0.0
    customers: int = 0
    snapshot: str | None = None
    snapshot_age_seconds: float | None = None
    watermark_us: int = _NEG
    ids_indexed: int = 0

    def describe(self) -> str:
        if self.how == "snapshot":
            return (f"from snapshot {self.snapshot} ({_age(self.snapshot_age_seconds or 0.0)} old) + "
                    f"{self.events_replayed:,} events replayed, in {self.seconds:.1f}s")  # fmt: skip
        if self.how == "redis":
            return f"Redis state reused + {self.events_replayed:,} events caught up, in {self.seconds:.1f}s"
        return f"{self.events_replayed:,} events replayed from the event log, in {self.seconds:.1f}s"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class Serving:
    """What :func:`start_serving` built: the service, step timings, how the store started, the live path."""

    service: ScoringService
    timings: dict[str, float]
    startup: StartupReport
    index: EventIdIndex = field(default_factory=EventIdIndex)


def load_online_state(
    workspace: Workspace, store: OnlineStore, index: EventIdIndex, *, snapshots: bool = True
) -> StartupReport:
    """Bring ``store`` up to date with the event log (moving any live spools in first) and fill ``index`` with
    the log's event ids. An in-process store starts from the newest usable snapshot and replays only the events
    ingested after its watermark; without one it replays the log."""
    started = time.perf_counter()
    report = StartupReport("empty")
    # Under the workspace lock: nothing is appended to the log meanwhile (live events wait in the spools).
    with workspace.write_lock(), open_moved(workspace) as (con, _):
        latest = log_watermark(con)
        report.watermark_us = _NEG if latest is None else latest
        if isinstance(store, InMemoryStore):
            info = (
                load_snapshot(snapshot_dir(workspace.state_dir), store.engine, index) if snapshots else None
            )
            if info is not None:
                report.how, report.snapshot = "snapshot", info.path.name
                report.snapshot_age_seconds = info.age_seconds
                report.events_replayed = replay_tail(con, store, info.watermark_us, index)
            else:
                report.how = "log" if latest is not None else "empty"
                report.events_replayed = store.rebuild(con)
                index.load(con)
        else:
            report.how = "redis"
            report.events_replayed = store.rebuild(con)
            index.load(con)
    report.customers = int(getattr(store, "customers", 0) or 0)
    report.ids_indexed = len(index)
    report.seconds = time.perf_counter() - started
    log.info("online store started: %s", report.describe())
    return report


def replay_tail(con: Any, store: OnlineStore, watermark_us: int, index: EventIdIndex | None = None) -> int:
    """Apply the events and attribute versions ingested after ``watermark_us``; returns the events applied."""
    relation = con.sql(
        "SELECT * EXCLUDE (ingested_at), hash(event_id) AS id_hash FROM events "
        f"WHERE epoch_us(ingested_at) > {int(watermark_us)} ORDER BY available_at, event_id"
    )
    applied = 0
    hashes = []
    for batch in relation.to_arrow_reader(200_000):
        table = pa.Table.from_batches([batch])
        hashes.append(table.column("id_hash").to_numpy().astype(np.uint64))
        applied += store.apply(table.drop_columns(["id_hash"]))
    if index is not None and hashes:
        index.add_sorted(np.concatenate(hashes))
    rows = con.execute(
        "SELECT customer_id, attribute, value, source, epoch_us(valid_from) AS valid_from, "
        "epoch_us(available_at) AS available_at FROM attributes WHERE epoch_us(ingested_at) > ? "
        "ORDER BY available_at",
        [int(watermark_us)],
    ).fetchall()
    if rows:
        names = ("customer_id", "attribute", "value", "source", "valid_from", "available_at")
        apply_attributes = getattr(store, "apply_attributes", None)
        if apply_attributes is not None:
            apply_attributes([dict(zip(names, r, strict=True)) for r in rows])
    return applied


def serving_clock(workspace: Workspace) -> Callable[[], datetime] | None:
    """Under ``clock: data``, predictions start as of the event log's newest event and the clock runs on from
    there at wall-clock speed (a replayed history answers as it would have then); None (the wall clock) for a
    live project."""
    if workspace.spec.clock != "data":
        return None
    newest = DataClock.read(workspace).newest_event
    if newest is None:
        return None
    shift = datetime.now(UTC) - newest
    return lambda: datetime.now(UTC) - shift


def start_serving(
    workspace: Workspace,
    *,
    model_ref: str | None = None,
    ttl: timedelta | None = None,
    online_store: str | None = None,
    snapshots: bool = True,
) -> Serving:
    """The scoring service of a workspace, ready to serve, how long each step took (seconds) and how its online
    store started.

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
    index = EventIdIndex()
    report = load_online_state(workspace, store, index, snapshots=snapshots)
    timings["store_rebuild"] = time.perf_counter() - t0
    timings["events_replayed"] = float(report.events_replayed)
    service = ScoringService(store, model, ttl=ttl or settings.score_ttl.timedelta, rules=rules,
                             clock=serving_clock(workspace))  # fmt: skip
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
    return Serving(service, timings, report, index)


def build_service(
    workspace: Workspace,
    *,
    model_ref: str | None = None,
    ttl: timedelta | None = None,
    online_store: str | None = None,
) -> tuple[ScoringService, dict[str, float]]:
    """:func:`start_serving`'s service and timings (the older, smaller signature)."""
    serving = start_serving(workspace, model_ref=model_ref, ttl=ttl, online_store=online_store)
    return serving.service, serving.timings
