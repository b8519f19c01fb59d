"""The Redis online store against the in-memory reference: same values to the bit, shared between instances,
no lost concurrent applies, catch-up from the log at start, one loader at a time."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import redis
from feature_helpers import same
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import canonical_events, write_spec
from tests.features.test_feature_parity import FEATURES, streams
from tests.services import RedisServer, free_port

from propensity.core.errors import PropensityError
from propensity.events.ingest import ingest_table
from propensity.events.log import DuckDBEventLog
from propensity.features.offline import parse_features
from propensity.serving.ingest import append_live
from propensity.serving.redis_store import RedisStore
from propensity.serving.startup import build_store
from propensity.serving.state_codec import StateCodec
from propensity.serving.store import InMemoryStore, OnlineStore
from propensity.workspace import Workspace

pytestmark = pytest.mark.service

D = 86_400_000_000
UTC_US = pa.timestamp("us", tz="UTC")


def events_table(events: Sequence[Mapping[str, Any]]) -> pa.Table:
    """Events (timestamps in epoch µs) as the log's columns."""

    def col(name: str, kind: pa.DataType) -> pa.Array:
        return pa.array([e.get(name) for e in events], kind)

    return pa.table(
        {
            "event_id": col("event_id", pa.string()),
            "customer_id": col("customer_id", pa.string()),
            "event_type": col("event_type", pa.string()),
            "event_time": col("event_time", pa.int64()).cast(UTC_US),
            "available_at": col("available_at", pa.int64()).cast(UTC_US),
            "amount": col("amount", pa.float64()),
            "category": col("category", pa.string()),
            "channel": col("channel", pa.string()),
            "properties": col("properties", pa.string()),
        }
    )


@pytest.fixture
def stores(redis_server: RedisServer, prefix: str) -> Iterator[Any]:
    """A factory of RedisStores on the session's redis-server under this test's prefix, closed afterwards."""
    made: list[RedisStore] = []

    def make(features: Any = FEATURES, *, key_prefix: str = prefix) -> RedisStore:
        store = RedisStore(features, redis_server.url, prefix=key_prefix)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


# --------------------------------------------------------------------------------------------- parity


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
@given(stream=streams(), data=st.data())
def test_redis_store_gives_the_in_memory_store_values_to_the_bit(
    redis_server: RedisServer, stream: Any, data: st.DataObject
) -> None:
    """Late, duplicated, out-of-order and future-dated events, applied in random batches to both stores, with
    reads in between: identical vectors (==, not approximately), identical `knows`, identical stored states."""
    arrivals, _, _ = stream
    memory = InMemoryStore(FEATURES)
    shared = RedisStore(FEATURES, redis_server.url, prefix=f"parity-{uuid.uuid4().hex}")
    assert isinstance(shared, OnlineStore)
    last_read: dict[str, int] = {}
    i = 0
    try:
        while i < len(arrivals):
            kind, item = arrivals[i]
            if kind == "attr":
                memory.engine.apply_attribute(item)
                assert shared.apply_attributes([item]) == 1
                i += 1
            else:
                size = data.draw(st.integers(1, 4), label="batch size")
                batch = []
                while i < len(arrivals) and arrivals[i][0] == "event" and len(batch) < size:
                    batch.append(arrivals[i][1])
                    i += 1
                table = events_table(batch)
                assert shared.apply(table) == memory.apply(table)
            now = item["available_at"]
            for _ in range(data.draw(st.integers(0, 2), label="reads")):
                customer = data.draw(st.sampled_from(["c0", "c1", "c2", "never-seen"]))
                t = max(data.draw(st.integers(now - D, now + 3 * D)), last_read.get(customer, now - D))
                last_read[customer] = t
                assert shared.vector(customer, t) == memory.vector(customer, t), (customer, t)
                assert shared.knows(customer) == memory.knows(customer)
        raw = redis.Redis.from_url(redis_server.url)
        codec = StateCodec(memory.engine.state_layout())
        for customer in ("c0", "c1", "c2"):
            read, seen = raw.hmget(shared.key(customer), ("r", "s"))
            expected = memory.engine.export_customer(customer)
            assert (read is None) == (expected is None)
            if read is not None:
                assert codec.decode(read, seen) == expected
    finally:
        shared.close()


# ------------------------------------------------------------------------------------ shared state

SIMPLE = parse_features(
    [
        {"name": "purchases", "aggregate": "count", "event_type": "purchase", "window": "lifetime"},
        {
            "name": "spend_30d",
            "aggregate": "sum",
            "field": "amount",
            "event_type": "purchase",
            "window": "30d",
        },
        {"name": "skus_30d", "aggregate": "count_distinct", "field": "sku", "window": "30d"},
    ]
)
T0 = 1_700_000_000_000_000


def purchase(event_id: str, customer: str, t: int, amount: float, sku: str = "a") -> dict[str, Any]:
    return {"event_id": event_id, "customer_id": customer, "event_type": "purchase", "event_time": t,
            "available_at": t, "amount": amount, "sku": sku}  # fmt: skip


def simple_table(events: Sequence[Mapping[str, Any]]) -> pa.Table:
    table = events_table(events)
    return table.append_column("sku", pa.array([e.get("sku") for e in events], pa.string()))


def test_events_applied_through_one_store_are_read_through_another(stores: Any) -> None:
    writer, reader = stores(SIMPLE), stores(SIMPLE)
    assert not reader.knows("c1") and reader.vector("c1", T0) == (0, 0.0, 0)
    assert (
        writer.apply(simple_table([purchase("e1", "c1", T0, 10.0), purchase("e2", "c1", T0 + 1, 2.5, "b")]))
        == 2
    )
    assert reader.vector("c1", T0 + 10) == (2, 12.5, 2)
    assert reader.knows("c1")
    # A duplicate through the other store is recognised (the dedupe ids are shared too).
    assert reader.apply(simple_table([purchase("e2", "c1", T0 + 1, 2.5, "b")])) == 0
    assert writer.vector("c1", T0 + 10) == (2, 12.5, 2)
    assert writer.customers == reader.customers == 1
    # Several customers in one round trip: the same as one by one; `knows` follows each read.
    assert reader.vectors(["c1", "nobody", "c1"], T0 + 10) == [(2, 12.5, 2), (0, 0.0, 0), (2, 12.5, 2)]
    assert reader.knows("c1") and not reader.knows("nobody")


def test_concurrent_applies_for_one_customer_lose_nothing(stores: Any) -> None:
    """Two stores (as two server processes would) apply events of the same customer at the same time; every
    event counts exactly once, whatever the interleaving (a plain read-modify-write would lose some)."""
    per_thread = 150
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def work(name: str) -> None:
        store = stores(SIMPLE)
        barrier.wait()
        try:
            for i in range(per_thread):
                store.apply(simple_table([purchase(f"{name}-{i}", "hot", T0 + i, 1.0, f"{name}{i % 3}")]))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert stores(SIMPLE).vector("hot", T0 + per_thread) == (2 * per_thread, 2.0 * per_thread, 6)


# -------------------------------------------------------------------------------- loading the log

SPEC = """
features:
  - {name: purchases, aggregate: count, event_type: purchase, window: lifetime}
  - {name: views_7d, aggregate: count, event_type: page_view, window: 7d}
  - {name: spend, aggregate: sum, field: amount, event_type: purchase, window: lifetime}
  - {name: skus_30d, aggregate: count_distinct, field: sku, window: 30d}
"""


def _log_store(ws: Workspace, store: OnlineStore) -> int:
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        return store.rebuild(con)


def _assert_same_as_memory(ws: Workspace, store: RedisStore, customers: Sequence[str]) -> None:
    memory = InMemoryStore(ws.spec.features)
    _log_store(ws, memory)
    t = datetime.now(UTC) + timedelta(days=1)
    for c in customers:
        a, b = store.vector(c, t), memory.vector(c, t)
        assert all(same(x, y) for x, y in zip(a, b, strict=True)), (c, a, b)


def test_a_restarted_store_catches_up_only_on_what_it_has_not_seen(tmp_path: Path, stores: Any) -> None:
    ws = write_spec(tmp_path, SPEC)
    ingest_table(ws, canonical_events(300, customers=40))
    first = stores(ws.spec.features)
    assert _log_store(ws, first) == 300  # an empty store is loaded whole
    # While no server runs, the CLI ingests more history...
    later = canonical_events(120, customers=40, start=datetime(2024, 3, 5, tzinfo=UTC), seed=1)
    later = later.set_column(0, "event_id", pa.array([f"later-{i}" for i in range(120)]))
    ingest_table(ws, later)
    # ...a server applied one live event, and another was appended but never applied (the server died).
    now = datetime.now(UTC).isoformat()
    applied = append_live(ws, [{"event_id": "live-1", "customer_id": "c1", "event_type": "purchase",
                                "event_time": now, "amount": 5.0}])  # fmt: skip
    assert first.apply(applied.inserted) == 1
    append_live(ws, [{"event_id": "live-2", "customer_id": "c2", "event_type": "purchase", "event_time": now,
                      "amount": 7.0}])  # fmt: skip
    restarted = stores(ws.spec.features)
    assert _log_store(ws, restarted) == 121  # the CLI's 120 and the unapplied live event; live-1 not again
    _assert_same_as_memory(ws, restarted, [f"c{i}" for i in range(40)])
    assert _log_store(ws, stores(ws.spec.features)) == 0  # nothing new: nothing applied


def test_a_load_replaces_states_written_before_it(tmp_path: Path, stores: Any) -> None:
    """Redis came back empty and running servers wrote live events for a few customers: the next load gives
    those customers their whole history again, live events included."""
    ws = write_spec(tmp_path, SPEC)
    ingest_table(ws, canonical_events(300, customers=40))
    running = stores(ws.spec.features)
    live = append_live(ws, [{"event_id": "live-1", "customer_id": "c3", "event_type": "purchase",
                             "event_time": datetime.now(UTC).isoformat(), "amount": 5.0}])  # fmt: skip
    assert running.apply(live.inserted) == 1
    assert running.vector("c3")[0] == 1  # only the live purchase: the namespace was never loaded
    assert _log_store(ws, stores(ws.spec.features)) == 301
    _assert_same_as_memory(ws, running, [f"c{i}" for i in range(40)])
    assert running.count_customers() == 40


def test_two_stores_starting_at_once_load_the_log_once(tmp_path: Path, stores: Any) -> None:
    ws = write_spec(tmp_path, SPEC)
    ingest_table(ws, canonical_events(300, customers=40))
    results: list[int] = []
    both = [stores(ws.spec.features), stores(ws.spec.features)]
    threads = [threading.Thread(target=lambda s=s: results.append(_log_store(ws, s))) for s in both]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 300]
    _assert_same_as_memory(ws, both[0], [f"c{i}" for i in range(40)])


def test_a_new_feature_set_starts_from_its_own_empty_namespace(tmp_path: Path, stores: Any) -> None:
    ws = write_spec(tmp_path, SPEC)
    ingest_table(ws, canonical_events(50, customers=5))
    assert _log_store(ws, stores(ws.spec.features)) == 50
    changed = write_spec(
        tmp_path, SPEC + "  - {name: carts, aggregate: count, event_type: cart_add, window: 7d}\n"
    )
    assert _log_store(changed, stores(changed.spec.features)) == 50  # loaded again, for the new version


# --------------------------------------------------------------------------------------- wiring


def test_the_store_comes_from_the_spec_or_the_store_option(tmp_path: Path, redis_server: RedisServer) -> None:
    ws = write_spec(
        tmp_path, SPEC + f"serving:\n  online_store: {redis_server.url}\n  redis_prefix: spec-test\n"
    )
    from_spec = build_store(ws)
    assert isinstance(from_spec, RedisStore) and from_spec.prefix == "spec-test"
    assert isinstance(build_store(ws, "memory"), InMemoryStore)
    with pytest.raises(PropensityError, match="--store 'mysql://x'"):
        build_store(ws, "mysql://x")


def test_redis_urls_are_shown_without_their_password(stores: Any) -> None:
    store = RedisStore(SIMPLE, "redis://user:s3cret@127.0.0.1:1/0")
    assert "s3cret" not in store.url and store.url == "redis://user:***@127.0.0.1:1/0"


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "propensity", "serve", *args],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def test_serve_refuses_an_unknown_store_and_an_unreachable_redis(tmp_path: Path) -> None:
    ws = write_spec(tmp_path, SPEC)
    ingest_table(ws, canonical_events(20, customers=5))
    bad = _serve("-w", str(ws.root), "--store", "mysql://db")
    assert bad.returncode == 1 and "--store 'mysql://db'" in bad.stderr and "Traceback" not in bad.stderr
    down = _serve(
        "-w", str(ws.root), "--store", f"redis://127.0.0.1:{free_port()}/0", "--port", str(free_port())
    )
    assert down.returncode == 1 and "Traceback" not in down.stderr
    assert "online store (Redis at redis://127.0.0.1:" in down.stderr and "unavailable" in down.stderr


def test_asynchronous_reads_equal_blocking_ones(stores: Any) -> None:
    """The server's read path (one pipelined asyncio connection, hiredis) gives what vector()/knows() give."""
    import asyncio

    writer, reader = stores(SIMPLE), stores(SIMPLE)
    writer.apply(simple_table([purchase("e1", "c1", T0, 10.0), purchase("e2", "c1", T0 + 1, 2.5, "b")]))

    async def reads() -> tuple[Any, Any, Any]:
        one = await reader.aread("c1", T0 + 10)
        many = await reader.aread_many(["c1", "nobody", "c1"], T0 + 10)
        # Concurrent reads share the connection; replies come back in order.
        together = await asyncio.gather(*[reader.aread(c, T0 + 10) for c in ("c1", "nobody") * 20])
        return one, many, together

    one, many, together = asyncio.run(reads())
    assert one == (reader.vector("c1", T0 + 10), True) == ((2, 12.5, 2), True)
    assert many == ([(2, 12.5, 2), (0, 0.0, 0), (2, 12.5, 2)], [True, False, True])
    assert together == [((2, 12.5, 2), True), ((0, 0.0, 0), False)] * 20
    # A second event loop (a new connection) works as well.
    assert asyncio.run(reader.aread("c1", T0 + 10)) == ((2, 12.5, 2), True)
