"""Online equals offline: random event streams (late, future-dated, duplicated, tied, out of event-time order),
every feature kind, windows and sessions crossing the query time, random query times."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pytest
from feature_helpers import T0_US, insert_attributes, insert_events, new_log, same, spine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from propensity.features import OnlineFeatureEngine, compute_features, parse_features

S = 1_000_000
M = 60 * S
H = 60 * M
D = 24 * H

FEATURES = parse_features(
    [
        {"name": "events_15m", "aggregate": "count", "window": "15m"},
        {"name": "views_1h", "aggregate": "count", "event_type": "page_view", "window": "1h"},
        {
            "name": "carts_1d_exact",
            "aggregate": "count",
            "event_type": "cart_add",
            "window": "1d",
            "bucket": "exact",
        },
        {"name": "purchases_7d", "aggregate": "count", "event_type": "purchase", "window": "7d"},
        {"name": "purchases_lifetime", "aggregate": "count", "event_type": "purchase", "window": "lifetime"},
        {"name": "spend_1d", "aggregate": "sum", "field": "amount", "event_type": "purchase", "window": "1d"},
        {"name": "spend_2d_6h", "aggregate": "sum", "field": "amount", "window": "2d", "bucket": "6h"},
        {"name": "spend_lifetime", "aggregate": "sum", "field": "amount", "window": "lifetime"},
        {"name": "mean_amount_7d", "aggregate": "mean", "field": "amount", "window": "7d"},
        {
            "name": "mean_amount_exact",
            "aggregate": "mean",
            "field": "amount",
            "window": "3h",
            "bucket": "exact",
        },
        {"name": "min_amount_1d", "aggregate": "min", "field": "amount", "window": "1d"},
        {"name": "max_amount_lifetime", "aggregate": "max", "field": "amount", "window": "lifetime"},
        {"name": "max_category_7d", "aggregate": "max", "field": "category", "window": "7d"},
        {
            "name": "distinct_categories_7d",
            "aggregate": "count_distinct",
            "field": "category",
            "window": "7d",
        },
        {
            "name": "distinct_amounts_life",
            "aggregate": "count_distinct",
            "field": "amount",
            "window": "lifetime",
        },
        {"name": "last_category", "aggregate": "last", "field": "category", "window": "lifetime"},
        {"name": "last_amount_1h", "aggregate": "last", "field": "amount", "window": "1h"},
        {"name": "last_device_1d", "aggregate": "last", "field": "properties.device", "window": "1d"},
        {
            "name": "since_last_purchase",
            "aggregate": "time_since_last",
            "event_type": "purchase",
            "window": "lifetime",
        },
        {"name": "since_last_event_1d", "aggregate": "time_since_last", "window": "1d"},
        {"name": "since_first_event_7d", "aggregate": "time_since_first", "window": "7d"},
        {"name": "since_first_ever", "aggregate": "time_since_first", "window": "lifetime"},
        {
            "name": "big_shoe_buys_7d",
            "aggregate": "count",
            "event_type": ["purchase", "refund"],
            "where": "category == 'shoes' and amount > 49.99",
            "window": "7d",
        },
        {
            "name": "web_mobile_views_1d",
            "aggregate": "count",
            "where": "channel in ('web', 'app') and properties.device != 'mobile'",
            "window": "1d",
        },
        {
            "name": "cheap_spend_1h",
            "aggregate": "sum",
            "field": "amount",
            "where": "amount <= 10",
            "window": "1h",
        },
        {"name": "session_views", "kind": "session", "aggregate": "count", "event_type": "page_view"},
        {"name": "session_duration", "kind": "session", "aggregate": "duration"},
        {
            "name": "carts_before_purchase",
            "kind": "session",
            "aggregate": "count_before",
            "event_type": "cart_add",
            "before": "purchase",
        },
        {"name": "sessions_7d", "kind": "session", "aggregate": "sessions", "window": "7d"},
        {
            "name": "sessions_1d_short",
            "kind": "session",
            "aggregate": "sessions",
            "window": "1d",
            "gap": "10m",
        },
        {
            "name": "short_session_views",
            "kind": "session",
            "aggregate": "count",
            "event_type": "page_view",
            "gap": "10m",
            "lookback": "2h",
            "session_events": ["page_view", "cart_add"],
        },
        # Calendar days in New York (the project's zone): active days, dates compared in predicates.
        {
            "name": "active_days_7d",
            "aggregate": "count_distinct",
            "field": "event_date",
            "window": "7d",
            "timezone": "America/New_York",
        },
        {
            "name": "purchase_days_life",
            "aggregate": "count_distinct",
            "field": "event_date",
            "event_type": "purchase",
            "window": "lifetime",
            "timezone": "America/New_York",
        },
        {
            "name": "last_active_date",
            "aggregate": "last",
            "field": "event_date",
            "window": "lifetime",
            "timezone": "America/New_York",
        },
        {
            "name": "views_since_jan_9",
            "aggregate": "count",
            "where": "event_date >= '2024-01-09' and event_date != '2024-01-10'",
            "window": "lifetime",
            "timezone": "America/New_York",
        },
        {
            "name": "session_views_jan_9",
            "kind": "session",
            "aggregate": "count",
            "event_type": "page_view",
            "where": "event_date == '2024-01-09'",
            "timezone": "America/New_York",
        },
        {"name": "cart_view_ratio_7d", "kind": "derived", "expr": "carts_1d_exact / views_1h"},
        {"name": "ratio_plus", "kind": "derived", "expr": "(cart_view_ratio_7d + 1) * -spend_1d - 2.5"},
        {"name": "plan", "kind": "attribute", "attribute": "plan"},
        {"name": "crm_plan", "kind": "attribute", "attribute": "plan", "source": "crm"},
        {"name": "age", "kind": "attribute", "attribute": "age", "type": "number"},
        {"name": "consent", "kind": "attribute", "attribute": "consent", "type": "boolean"},
        {"name": "tenure_days", "kind": "attribute", "attribute": "signup", "type": "days_since"},
    ]
)

TYPES = ["page_view", "cart_add", "purchase", "refund"]
AMOUNTS = [None, 0.0, 5.0, 10.0, 49.99, 50.0, 120.5, -5.0, 0.1, 1e6 + 0.3]
CATEGORIES = [None, "shoes", "books", "toys"]
CHANNELS = [None, "web", "app", "store"]
DEVICES = [None, "mobile", "desktop"]
ANCHORS = [-5 * D, -2 * D, -D, -6 * H, -H, 0, 30 * M, 2 * H, D]
ATTR_VALUES = {
    "plan": [None, "free", "pro", "team"],
    "age": [None, "42", " 7.5 ", "x", "1e2", "-3"],
    "consent": [None, "true", "no", "YES", "maybe", "1"],
    "signup": [
        None,
        "2023-12-01",
        "2024-01-09T12:30:00",
        "2024-01-08 06:00:00.5",
        "2024-01-05T00:00:00Z",
        "bad",
    ],
}


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[tuple[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    n = draw(st.integers(1, 35))
    events: list[dict[str, Any]] = []
    for i in range(n):
        anchor = draw(st.sampled_from(ANCHORS))
        offset = draw(st.one_of(st.integers(0, 40).map(lambda m: m * M), st.integers(0, 3 * H), st.just(0)))
        et = T0_US + anchor + offset
        delay = draw(
            st.one_of(
                st.just(0),
                st.integers(0, 10 * S),
                st.integers(0, 3 * D),  # late
                st.integers(-2 * H, 0),  # future-dated at arrival (event_time after available_at)
            )
        )
        props = {"device": draw(st.sampled_from(DEVICES))}
        events.append(
            {
                "event_id": f"e{i}",
                "customer_id": draw(st.sampled_from(["c0", "c1", "c2"])),
                "event_type": draw(st.sampled_from(TYPES)),
                "event_time": et,
                "available_at": et + delay,
                "amount": draw(st.sampled_from(AMOUNTS)),
                "category": draw(st.sampled_from(CATEGORIES)),
                "channel": draw(st.sampled_from(CHANNELS)),
                "properties": json.dumps({k: v for k, v in props.items() if v is not None}),
            }
        )
    attrs: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 8))):
        name = draw(st.sampled_from(sorted(ATTR_VALUES)))
        vf = T0_US + draw(st.integers(-3 * D, D))
        attrs.append(
            {
                "customer_id": draw(st.sampled_from(["c0", "c1", "c2"])),
                "attribute": name,
                "value": draw(st.sampled_from(ATTR_VALUES[name])),
                "valid_from": vf,
                "available_at": vf + draw(st.sampled_from([0, 0, H, 2 * D])),
                "source": draw(st.sampled_from(["crm", "billing"])),
            }
        )
    # Arrival: available_at order, ties in random order, some events delivered twice.
    arrivals: list[tuple[str, Any]] = [("event", e) for e in events] + [("attr", a) for a in attrs]
    dupes = draw(st.lists(st.sampled_from(events), max_size=4))
    arrivals += [("event", dict(e)) for e in dupes]
    keys = draw(st.lists(st.integers(0, 1000), min_size=len(arrivals), max_size=len(arrivals)))
    order = sorted(range(len(arrivals)), key=lambda i: (arrivals[i][1]["available_at"], keys[i]))
    return [arrivals[i] for i in order], events, attrs


@pytest.mark.slow
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(stream=streams(), data=st.data())
def test_online_equals_offline_at_random_times(stream: Any, data: st.DataObject) -> None:
    arrivals, events, attrs = stream
    engine = OnlineFeatureEngine(FEATURES)
    queries: list[tuple[str, int]] = []
    expected: list[tuple[Any, ...]] = []
    last_read: dict[str, int] = {}
    for pos, (kind, item) in enumerate(arrivals):
        if kind == "event":
            engine.apply(item)
        else:
            engine.apply_attribute(item)
        now = item["available_at"]
        nxt = arrivals[pos + 1][1]["available_at"] if pos + 1 < len(arrivals) else now + 3 * D
        if nxt == now:
            continue  # a query must see every event available by its time
        for _ in range(data.draw(st.integers(0, 2))):
            customer = data.draw(st.sampled_from(["c0", "c1", "c2"]))
            # Random times, and times sitting exactly on window edges of an event (± 1 µs).
            edge = (
                data.draw(st.sampled_from(events))["event_time"]
                + data.draw(st.sampled_from([15 * M, H, D, 7 * D, 30 * M, 10 * M, 2 * H, 3 * H, 2 * D]))
                + data.draw(st.sampled_from([-1, 0, 1]))
            )
            t = data.draw(st.one_of(st.integers(now, nxt - 1), st.just(now), st.just(edge)))
            if not now <= t < nxt:
                t = now
            # Reads of one customer go forward in time: a read that has taken in a future-dated event
            # raises that customer's floor (see docs/features.md).
            t = max(t, last_read.get(customer, t))
            if t >= nxt:
                continue
            last_read[customer] = t
            queries.append((customer, t))
            expected.append(engine.vector(customer, t))
    if not queries:
        return
    import os

    if os.environ.get("PARITY_DUMP"):
        with open(os.environ["PARITY_DUMP"], "w") as fh:
            json.dump({"arrivals": arrivals, "queries": queries}, fh, default=str)
    con = new_log()
    insert_events(con, events)
    insert_attributes(con, attrs)
    offline = compute_features(con, FEATURES, spine(queries))
    names = engine.feature_names
    for row, online, (customer, t) in zip(offline.to_pylist(), expected, queries, strict=True):
        for name, value in zip(names, online, strict=True):
            assert same(value, row[name]), (
                f"{name} for {customer} at {t - T0_US}µs: online {value!r}, offline {row[name]!r}"
            )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=streams())
def test_rebuild_from_the_log_equals_live_application(stream: Any) -> None:
    arrivals, events, attrs = stream
    live = OnlineFeatureEngine(FEATURES)
    for kind, item in arrivals:
        (live.apply if kind == "event" else live.apply_attribute)(item)
    con = new_log()
    insert_events(con, events)
    insert_attributes(con, attrs)
    rebuilt = OnlineFeatureEngine(FEATURES)
    assert rebuilt.rebuild(con) == len(events)
    t = max(item["available_at"] for _, item in arrivals) + 1
    t = max([t] + [e["event_time"] for e in events])
    for customer in ("c0", "c1", "c2"):
        a, b = live.vector(customer, t), rebuilt.vector(customer, t)
        assert all(same(x, y) for x, y in zip(a, b, strict=True)), (a, b)


def _general_ingest(engine: OnlineFeatureEngine, state: Any, ev: tuple[Any, ...]) -> None:
    """The engine's ingest in its loop form: every window through its group's general step (the generated
    functions inline only the common cases)."""
    et, floor, aggs = ev[3], state.floor, state.aggs
    key: tuple[Any, ...] = ()
    for g in engine._groups:
        if (g.types is not None and ev[2] not in g.types) or (g.pred is not None and not g.pred(ev)):
            continue
        vals = [get(ev) for get in g.getters]
        if g.has_last:
            key = (et, ev[4], ev[0])
        for si, b, n in g.hot:
            if b:
                g.update_window(aggs, si, b, n, et, floor, key, vals)
            elif aggs[si] is None:
                aggs[si] = g.new(et, key, vals)
            else:
                g.add(aggs[si], et, key, vals)
    for s in engine._sessions:
        if (s.types is not None and ev[2] not in s.types) or et <= floor - s.horizon:
            continue
        items = state.sessions[s.idx] = sorted([*(state.sessions[s.idx] or []), (et, s.mask(ev))])
        state.sessions[s.idx] = [item for item in items if item[0] > floor - s.horizon]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=streams(), batch_size=st.integers(1, 40))
def test_batches_and_generated_ingest_build_the_general_steps_state(stream: Any, batch_size: int) -> None:
    """``apply_batch`` (hoisted loop, generated per-type ingest) leaves every customer in exactly the state that
    event-by-event application through the general window step leaves: same buckets, totals, bounds, sets,
    ``last`` keys and session lists, floats bit for bit (the same additions in the same order)."""
    from propensity.core.event import EVENT_SCHEMA

    arrivals, _, _ = stream
    events = [item for kind, item in arrivals if kind == "event"]
    general = OnlineFeatureEngine(FEATURES)
    general._ingest = lambda state, ev: _general_ingest(general, state, ev)  # type: ignore[method-assign]
    for e in events:
        general.apply(e)
    batched = OnlineFeatureEngine(FEATURES)
    rows = [
        {f.name: e.get(f.name, e["available_at"] if f.name == "ingested_at" else None) for f in EVENT_SCHEMA}
        for e in events
    ]
    for start in range(0, len(rows), batch_size):
        part = rows[start : start + batch_size]
        table = pa.table({f.name: [r[f.name] for r in part] for f in EVENT_SCHEMA}, schema=EVENT_SCHEMA)
        batched.apply_batch(table)
    assert batched.events_applied == general.events_applied == len({e["event_id"] for e in events})
    assert batched.watermark == general.watermark
    for customer in ("c0", "c1", "c2"):
        a, b = general.export_customer(customer), batched.export_customer(customer)
        if a is None or b is None:
            assert a is b
            continue
        assert (b.floor, b.aggs, b.sessions, b.seen) == (a.floor, a.aggs, a.sessions, a.seen)
        # Pending events wait in the same order; a batch leaves the fields no feature reads empty.
        assert [ev[:5] for ev in b.pending or ()] == [ev[:5] for ev in a.pending or ()]
