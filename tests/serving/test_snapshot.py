"""Snapshots of the in-process online store: exact round trip, start-up from a snapshot plus the log's tail equal
to a full replay, and snapshots of another feature set or damaged ones skipped with a log line."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from tests.conftest import canonical_events, write_spec

from propensity.events.ingest import ingest_table
from propensity.events.live import EventIdIndex
from propensity.events.log import DuckDBEventLog
from propensity.features.online import OnlineFeatureEngine
from propensity.serving.snapshot import load_snapshot, snapshot_dir, write_snapshot
from propensity.serving.startup import load_online_state
from propensity.serving.store import InMemoryStore
from propensity.workspace import Workspace

SPEC = """
features:
  - {name: purchases, aggregate: count, event_type: purchase, window: lifetime}
  - {name: views_7d, aggregate: count, event_type: page_view, window: 7d}
  - {name: spend, aggregate: sum, field: amount, event_type: purchase, window: lifetime}
  - {name: skus_30d, aggregate: count_distinct, field: sku, window: 30d}
  - {name: last_sku, aggregate: last, field: sku, window: 30d}
"""


def _store(ws: Workspace) -> InMemoryStore:
    return InMemoryStore(ws.spec.features)


def _started(ws: Workspace) -> tuple[InMemoryStore, object]:
    store = _store(ws)
    report = load_online_state(ws, store, EventIdIndex())
    return store, report


def _same(a: InMemoryStore, b: InMemoryStore) -> None:
    assert sorted(a.engine.customer_ids()) == sorted(b.engine.customer_ids())
    t = max(a.engine.watermark, b.engine.watermark) + 1
    for cid in a.engine.customer_ids():
        assert a.vector(cid, t) == b.vector(cid, t), cid
        assert a.engine.export_customer(cid) == b.engine.export_customer(cid), cid


def _snapshot(ws: Workspace, store: InMemoryStore) -> Path:
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        (wm,) = con.execute("SELECT epoch_us(max(ingested_at)) FROM events").fetchall()[0]
    index = EventIdIndex()
    return write_snapshot(store.engine, snapshot_dir(ws.state_dir), int(wm), index)


def test_a_snapshot_round_trips_every_state_exactly(tmp_path: Path) -> None:
    ws = write_spec(tmp_path, SPEC)
    ingest_table(ws, canonical_events(800, customers=60))
    store, _ = _started(ws)
    path = _snapshot(ws, store)
    loaded = OnlineFeatureEngine(store.engine.plan)
    info = load_snapshot(path.parent, loaded)
    assert info is not None and info.customers == 60
    assert loaded.events_applied == store.engine.events_applied
    _same(store, InMemoryStore(loaded))


def test_start_up_from_a_snapshot_replays_only_the_tail_and_equals_a_full_replay(tmp_path: Path) -> None:
    ws = write_spec(tmp_path, SPEC)
    ingest_table(ws, canonical_events(800, customers=60))
    first, report = _started(ws)
    assert report.how == "log" and report.events_replayed == 800  # type: ignore[attr-defined]
    _snapshot(ws, first)
    tail = canonical_events(50, customers=60, start=datetime(2024, 3, 2, tzinfo=UTC), seed=3)
    tail = tail.set_column(0, "event_id", pa.array([f"tail-{i}" for i in range(50)]))
    ingest_table(ws, tail)
    restarted, report = _started(ws)
    assert report.how == "snapshot" and report.events_replayed == 50  # type: ignore[attr-defined]
    replayed = _store(ws)
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        replayed.rebuild(con)
    _same(restarted, replayed)


def test_snapshots_of_another_feature_set_or_damaged_are_skipped_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ws = write_spec(tmp_path, SPEC)
    ingest_table(ws, canonical_events(300, customers=20))
    store, _ = _started(ws)
    good = _snapshot(ws, store)
    # A newer snapshot of another feature set...
    (tmp_path / "other").mkdir()
    other = write_spec(tmp_path / "other", SPEC.replace("window: 7d", "window: 14d"))
    ingest_table(other, canonical_events(30, customers=5))
    other_store, _ = _started(other)
    foreign = _snapshot(other, other_store)
    moved = snapshot_dir(ws.state_dir) / foreign.name
    foreign.rename(moved)
    # ...and a newer one of this feature set, damaged in the middle.
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged = good.with_name(good.name.replace(good.name.rsplit("-", 1)[-1], "99999999999999999999.snap"))
    damaged.write_bytes(bytes(data))
    caplog.set_level(logging.INFO, logger="propensity.serving.snapshot")
    engine = OnlineFeatureEngine(store.engine.plan)
    info = load_snapshot(snapshot_dir(ws.state_dir), engine)
    assert info is not None and info.path == good  # the good one, after skipping both
    text = caplog.text
    assert f"{damaged.name} ignored" in text and "checksum" in text
    assert f"{moved.name} ignored: feature set" in text
    # A truncated file (a crash while writing it, before the rename) is skipped too.
    good.write_bytes(good.read_bytes()[:-20])
    damaged.unlink()
    assert load_snapshot(snapshot_dir(ws.state_dir), OnlineFeatureEngine(store.engine.plan)) is None
    _, report = _started(ws)
    assert report.how == "log"  # type: ignore[attr-defined]


def test_a_loaded_snapshot_decodes_each_customer_on_first_use_and_copies_the_cold_ones(
    tmp_path: Path,
) -> None:
    ws = write_spec(tmp_path, SPEC)
    ingest_table(ws, canonical_events(800, customers=60))
    store, _ = _started(ws)
    path = _snapshot(ws, store)
    loaded = OnlineFeatureEngine(store.engine.plan)
    assert load_snapshot(path.parent, loaded) is not None
    cold = loaded.cold
    assert cold is not None and len(cold) == 60 and loaded.customers == 60  # nothing decoded yet
    ids = sorted(store.engine.customer_ids())
    t = store.engine.watermark + 1
    assert loaded.vector(ids[0], t) == store.engine.vector(ids[0], t)
    assert len(cold) == 59 and loaded.customers == 60 and ids[0] in loaded
    # An event for a cold customer waits with it; a copy of one the snapshot holds is still not counted twice.
    held = canonical_events(800, customers=60).slice(0, 1).to_pylist()[0]
    new = {**held, "event_id": "after-the-snapshot", "available_at": held["event_time"]}
    for engine in (loaded, store.engine):
        engine.apply({**held, "available_at": held.get("available_at") or held["event_time"]})
        engine.apply(new)
    assert held["customer_id"] in loaded and loaded.cold is cold
    # A snapshot of a partly cold engine (cold customers copied as stored) loads to the same states.
    again = write_snapshot(loaded, tmp_path / "again", int(loaded.watermark))
    reloaded = OnlineFeatureEngine(store.engine.plan)
    assert load_snapshot(again.parent, reloaded) is not None
    _same(store, InMemoryStore(reloaded))
    _same(store, InMemoryStore(loaded))
