"""The online engine's own contract: duplicates, future-dated events, read times, bounded state, bulk paths."""

from __future__ import annotations

import gc
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from feature_helpers import T0_US, at, insert_events, new_log, us

from propensity.core.event import EVENT_SCHEMA
from propensity.features import AsOfError, OnlineFeatureEngine, parse_features

FEATURES = parse_features(
    [
        {"name": "views_1h", "aggregate": "count", "event_type": "page_view", "window": "1h"},
        {"name": "spend_7d", "aggregate": "sum", "field": "amount", "window": "7d"},
        {"name": "skus_7d", "aggregate": "count_distinct", "field": "sku", "window": "7d"},
        {"name": "views_life", "aggregate": "count", "event_type": "page_view", "window": "lifetime"},
    ]
)


def ev(eid: str, when: datetime | int, *, avail: datetime | int | None = None, **more: Any) -> dict[str, Any]:
    return {
        "event_id": eid,
        "customer_id": more.pop("cust", "c1"),
        "event_type": more.pop("etype", "page_view"),
        "event_time": when,
        "available_at": when if avail is None else avail,
        **more,
    }


def test_duplicates_are_applied_once() -> None:
    engine = OnlineFeatureEngine(FEATURES)
    assert engine.apply(ev("a", at(), amount=5.0)) is True
    assert engine.apply(ev("a", at(), amount=5.0)) is False
    assert engine.vector_dict("c1", at()) == {"views_1h": 1, "spend_7d": 5.0, "skus_7d": 0, "views_life": 1}


def test_unknown_customers_get_empty_values() -> None:
    engine = OnlineFeatureEngine(FEATURES)
    assert engine.vector("nobody", at()) == (0, 0.0, 0, 0)


def test_reads_before_the_customers_floor_are_refused() -> None:
    engine = OnlineFeatureEngine(FEATURES)
    engine.apply(ev("a", at(minutes=-30), avail=at()))
    with pytest.raises(AsOfError):
        engine.vector("c1", at(minutes=-1))
    assert engine.vector("c1", at())[0] == 1


def test_future_dated_events_wait_until_their_event_time() -> None:
    engine = OnlineFeatureEngine(FEATURES)
    engine.apply(ev("f", at(minutes=30), avail=at(), amount=7.0))  # the source's clock runs ahead
    assert engine.vector("c1", at())[:2] == (0, 0.0)
    assert engine.vector("c1", at(minutes=29))[:2] == (0, 0.0)
    assert engine.vector("c1", at(minutes=30))[:2] == (1, 7.0)
    # Having taken it in, the engine no longer answers for times before it, unless asked to read at its floor
    # (what serving does when a future-dated event has raised the floor past the clock).
    with pytest.raises(AsOfError):
        engine.vector("c1", at(minutes=29))
    assert engine.vector("c1", at(minutes=29), at_floor=True) == engine.vector("c1", at(minutes=30))


def test_timestamps_must_carry_a_zone_and_ints_are_microseconds() -> None:
    engine = OnlineFeatureEngine(FEATURES)
    with pytest.raises(ValueError, match="timezone-aware"):
        engine.apply(ev("a", datetime(2024, 1, 1)))
    engine.apply(ev("b", T0_US))
    assert engine.vector("c1", T0_US)[0] == 1


def test_state_stays_bounded_by_buckets_not_events() -> None:
    features = parse_features([{"name": "views_1d", "aggregate": "count", "window": "1d", "bucket": "1h"}])
    engine = OnlineFeatureEngine(features, dedupe_horizon=timedelta(hours=1))
    # 30 days of one event per minute: 43,200 events, at most 24 (+1) hourly buckets are ever held.
    for i in range(30 * 24 * 60):
        engine.apply(ev(f"e{i}", T0_US + i * 60_000_000))
    last = T0_US + (30 * 24 * 60 - 1) * 60_000_000
    assert engine.vector("c1", last) == (24 * 60,)  # the window is [day 29 00:00, day 29 23:59]
    state = engine._customers["c1"].aggs[0]
    assert len(state[0]) <= 25
    # Buckets plus the ids of the last hour's events (kept to recognise duplicates).
    assert len(engine._customers["c1"].seen) <= 2 * 64 + 60
    assert engine.memory_bytes("c1") < 40_000


def test_apply_batch_equals_apply_one_by_one() -> None:
    events = [
        ev(
            f"e{i}",
            at(minutes=-i * 7),
            avail=at(minutes=-i * 7 + (300 if i % 5 == 0 else 0)),
            amount=float(i),
            sku=f"s{i % 3}",
            cust=f"c{i % 4}",
        )
        for i in range(200)
    ]
    events.sort(key=lambda e: e["available_at"])
    one = OnlineFeatureEngine(FEATURES)
    for e in events:
        one.apply(e)
    rows = {f.name: [] for f in EVENT_SCHEMA}  # type: ignore[var-annotated]
    for e in events:
        for f in EVENT_SCHEMA:
            rows[f.name].append(e.get(f.name, e["available_at"] if f.name == "ingested_at" else None))
    batch = OnlineFeatureEngine(FEATURES)
    assert batch.apply_batch(pa.table(rows, schema=EVENT_SCHEMA)) == 200
    t = max(e["available_at"] for e in events) + timedelta(seconds=1)
    for c in ("c0", "c1", "c2", "c3"):
        assert one.vector(c, t) == batch.vector(c, t)


def test_rebuild_reads_only_the_longest_window() -> None:
    features = parse_features([{"name": "views_1d", "aggregate": "count", "window": "1d"}])
    con = new_log()
    insert_events(con, [ev(f"old{i}", at(days=-30, minutes=i)) for i in range(50)])
    insert_events(con, [ev(f"new{i}", at(hours=-3, minutes=i)) for i in range(5)])
    engine = OnlineFeatureEngine(features)
    assert engine.rebuild(con) == 5
    assert engine.vector("c1", at()) == (5,)
    assert engine.watermark == us(at(hours=-3, minutes=4))


def _events_table(events: list[dict[str, Any]]) -> pa.Table:
    rows = {f.name: [] for f in EVENT_SCHEMA}  # type: ignore[var-annotated]
    for e in events:
        for f in EVENT_SCHEMA:
            rows[f.name].append(e.get(f.name, e["available_at"] if f.name == "ingested_at" else None))
    return pa.table(rows, schema=EVENT_SCHEMA)


def test_a_batch_files_its_state_as_old_and_leaves_the_collector_as_it_found_it() -> None:
    """A bulk batch's new state goes straight to the collector's oldest generation (young collections need not
    traverse it); the collector's switch is restored, and objects the process froze itself stay frozen."""
    engine = OnlineFeatureEngine(FEATURES)
    table = _events_table(
        [ev(f"e{i}", at(minutes=i), amount=1.0, sku="s", cust=f"c{i % 5_000}") for i in range(10_020)]
    )
    assert gc.isenabled()
    engine.apply_batch(table)
    assert gc.isenabled()
    state = engine.export_customer("c1")
    assert state is not None
    assert any(obj is state.aggs for obj in gc.get_objects(generation=2))
    # A small batch (serving) leaves its objects young.
    engine.apply_batch(_events_table([ev("new", at(minutes=1), cust="c-new")]))
    fresh = engine.export_customer("c-new")
    assert fresh is not None
    assert not any(obj is fresh.aggs for obj in gc.get_objects(generation=2))
    gc.disable()
    try:
        engine.apply_batch(_events_table([ev("late", at(minutes=10_002))]))
        assert not gc.isenabled()
    finally:
        gc.enable()
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        engine.apply_batch(_events_table([ev("later", at(minutes=10_003))]))
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()
    assert engine.vector("c1", at(minutes=10_010))[0] == 3  # views_1h: e10001, late, later
