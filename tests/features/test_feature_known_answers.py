"""Hand-computed values for every feature kind, checked on both engines, and the late-event guarantee."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pytest
from feature_helpers import at, insert_attributes, insert_events, new_log, spine

from propensity.features import OnlineFeatureEngine, compute_features, parse_features


def ev(
    eid: str, etype: str, when: datetime, *, avail: datetime | None = None, cust: str = "c1", **props: Any
) -> dict:
    return {
        "event_id": eid,
        "customer_id": cust,
        "event_type": etype,
        "event_time": when,
        "available_at": avail or when,
        **props,
    }


def values(
    engine: str,
    features: list[dict[str, Any]],
    events: Sequence[dict[str, Any]],
    queries: Sequence[tuple[str, datetime]],
    attrs: Sequence[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    fs = parse_features(features)
    if engine == "offline":
        con = new_log()
        insert_events(con, events)
        insert_attributes(con, attrs)
        table = compute_features(con, fs, spine(queries))
        return [{f.name: row[f.name] for f in fs} for row in table.to_pylist()]
    online = OnlineFeatureEngine(fs)
    # Feed events in arrival order; each query sees everything available by its time.
    items = sorted([("e", e) for e in events] + [("a", a) for a in attrs], key=lambda x: x[1]["available_at"])
    answers: dict[tuple[str, datetime], dict[str, Any]] = {}
    pos = 0
    for customer, t in sorted(queries, key=lambda q: q[1]):
        while pos < len(items) and items[pos][1]["available_at"] <= t:
            kind, item = items[pos]
            (online.apply if kind == "e" else online.apply_attribute)(item)
            pos += 1
        answers[(customer, t)] = online.vector_dict(customer, t)
    return [answers[q] for q in queries]


ENGINES = ["offline", "online"]
EVENTS = [
    ev("p1", "purchase", at(days=-10), amount=100.0, category="shoes", channel="web"),
    ev("p2", "purchase", at(days=-3), amount=40.0, category="books", channel="app"),
    ev(
        "p3",
        "purchase",
        at(days=-1),
        amount=60.0,
        category="shoes",
        channel="web",
        properties='{"device": "mobile"}',
    ),
    ev("r1", "refund", at(hours=-20), amount=-40.0, category="books"),
    ev("v1", "page_view", at(hours=-2), category="toys"),
    ev("v2", "page_view", at(hours=-1, minutes=-50), category="shoes"),
    ev("c1", "cart_add", at(hours=-1, minutes=-40), amount=30.0, category="shoes"),
    ev("v3", "page_view", at(hours=-1, minutes=-30)),
    ev("c2", "cart_add", at(hours=-1, minutes=-20), amount=20.0),
    ev("p4", "purchase", at(hours=-1, minutes=-10), amount=50.0, category="shoes"),
    ev("c3", "cart_add", at(hours=-1, minutes=-5), amount=5.0),
]


@pytest.mark.parametrize("engine", ENGINES)
def test_windowed_aggregates(engine: str) -> None:
    features = [
        {
            "name": "purchases_7d",
            "aggregate": "count",
            "event_type": "purchase",
            "window": "7d",
            "bucket": "exact",
        },
        {"name": "purchases_life", "aggregate": "count", "event_type": "purchase", "window": "lifetime"},
        {"name": "spend_7d", "aggregate": "sum", "field": "amount", "event_type": "purchase", "window": "7d"},
        {
            "name": "mean_spend_7d",
            "aggregate": "mean",
            "field": "amount",
            "event_type": "purchase",
            "window": "7d",
        },
        {"name": "min_amount_life", "aggregate": "min", "field": "amount", "window": "lifetime"},
        {"name": "max_amount_1d", "aggregate": "max", "field": "amount", "window": "1d"},
        {"name": "categories_7d", "aggregate": "count_distinct", "field": "category", "window": "7d"},
        {"name": "last_category", "aggregate": "last", "field": "category", "window": "lifetime"},
        {
            "name": "since_purchase",
            "aggregate": "time_since_last",
            "event_type": "purchase",
            "window": "lifetime",
        },
        {"name": "since_first_7d", "aggregate": "time_since_first", "window": "7d"},
        {
            "name": "shoe_buys_over_50",
            "aggregate": "count",
            "where": "category == 'shoes' and amount > 50",
            "window": "lifetime",
        },
        {
            "name": "mobile_buys",
            "aggregate": "count",
            "where": "properties.device == 'mobile'",
            "window": "lifetime",
        },
        {
            "name": "refunds_empty_1h",
            "aggregate": "sum",
            "field": "amount",
            "event_type": "refund",
            "window": "1h",
        },
        {
            "name": "mean_empty_1h",
            "aggregate": "mean",
            "field": "amount",
            "event_type": "refund",
            "window": "1h",
        },
    ]
    (got,) = values(engine, features, EVENTS, [("c1", at())])
    assert got == {
        "purchases_7d": 3,  # p2, p3, p4 (p1 is 10 days old)
        "purchases_life": 4,
        "spend_7d": 150.0,
        "mean_spend_7d": 50.0,
        "min_amount_life": -40.0,
        # 1d has 15m buckets: the window starts 95 buckets before the one holding t, so p3 (exactly -1d) is out.
        "max_amount_1d": 50.0,
        "categories_7d": 3,  # books, shoes, toys
        "last_category": "shoes",  # p4 is the latest event carrying a category
        "since_purchase": 70 * 60.0,
        "since_first_7d": 3 * 86400.0,
        "shoe_buys_over_50": 2,  # p1 (100), p3 (60); p4 is 50, not > 50
        "mobile_buys": 1,
        "refunds_empty_1h": 0.0,
        "mean_empty_1h": None,
    }


@pytest.mark.parametrize("engine", ENGINES)
def test_window_boundaries_exact_and_bucketed(engine: str) -> None:
    t = at()
    events = [
        ev("a", "page_view", at(hours=-1)),  # exactly t - 1h: outside (t - w, t]
        ev("b", "page_view", at(hours=-1, microseconds=1)),  # just inside
        ev("c", "page_view", at()),  # exactly t: inside
        ev("d", "page_view", at(microseconds=1)),  # after t: outside
        ev("e", "page_view", at(minutes=-59, seconds=-30)),  # inside both
    ]
    features = [
        {"name": "exact_1h", "aggregate": "count", "window": "1h", "bucket": "exact"},
        # 1h buckets: the window is the hour holding t only, i.e. [t, t] here since t is on the hour.
        {"name": "hourly_1h", "aggregate": "count", "window": "1h", "bucket": "1h"},
        # 30m buckets, 2 of them: [t - 30m, t]
        {"name": "half_hours_1h", "aggregate": "count", "window": "1h", "bucket": "30m"},
    ]
    got = values(engine, features, events, [("c1", t), ("c1", at(minutes=10))])
    assert got[0] == {"exact_1h": 3, "hourly_1h": 1, "half_hours_1h": 1}
    # At t + 10m: exact window (t - 50m, t + 10m] holds c, d; hourly: [t, t+10m] holds c, d;
    # 30m buckets: [t - 30m, t + 10m] holds c, d.
    assert got[1] == {"exact_1h": 2, "hourly_1h": 2, "half_hours_1h": 2}


@pytest.mark.parametrize("engine", ENGINES)
def test_last_value_ties_break_by_available_at_then_event_id(engine: str) -> None:
    same_time = at(hours=-1)
    events = [
        ev("x2", "purchase", same_time, avail=at(minutes=-30), category="late"),
        ev("x1", "purchase", same_time, avail=at(minutes=-50), category="early"),
        ev("x3", "purchase", same_time, avail=at(minutes=-30), category="late_id"),
        ev("x0", "purchase", at(hours=-2), avail=at(minutes=-10), category="older"),
    ]
    features = [{"name": "last_cat", "aggregate": "last", "field": "category", "window": "lifetime"}]
    got = values(engine, features, events, [("c1", at(minutes=-40)), ("c1", at())])
    assert got == [{"last_cat": "early"}, {"last_cat": "late_id"}]


@pytest.mark.parametrize("engine", ENGINES)
def test_session_features(engine: str) -> None:
    features = [
        {"name": "views", "kind": "session", "aggregate": "count", "event_type": "page_view"},
        {"name": "duration", "kind": "session", "aggregate": "duration"},
        {
            "name": "carts_before_buy",
            "kind": "session",
            "aggregate": "count_before",
            "event_type": "cart_add",
            "before": "purchase",
        },
        {"name": "sessions_7d", "kind": "session", "aggregate": "sessions", "window": "7d"},
    ]
    got = values(
        engine,
        features,
        EVENTS,
        [
            ("c1", at(hours=-1)),
            ("c1", at(minutes=-36)),
            ("c1", at(minutes=-35)),
            ("c1", at(hours=-1, minutes=-45)),
        ],
    )
    # The session: v1 (-2h), v2 (-1h50), c1 (-1h40), v3 (-1h30), c2 (-1h20), p4 (-1h10), c3 (-1h05).
    assert got[0] == {"views": 3, "duration": 55 * 60.0, "carts_before_buy": 2, "sessions_7d": 4}
    # 29 minutes after c3 the session is still current; 30 minutes after it is still (gap is inclusive).
    assert got[1]["views"] == 3
    assert got[2] == {"views": 3, "duration": 55 * 60.0, "carts_before_buy": 2, "sessions_7d": 4}
    # At -1h45 only v1, v2 are visible-and-past: a current session of 2 views, 10 minutes long.
    assert got[3] == {"views": 2, "duration": 600.0, "carts_before_buy": 0, "sessions_7d": 4}
    (later,) = values(engine, features, EVENTS, [("c1", at(minutes=-34))])
    assert later == {"views": 0, "duration": None, "carts_before_buy": 0, "sessions_7d": 4}


@pytest.mark.parametrize("engine", ENGINES)
def test_derived_features_are_safe_on_zero_and_null(engine: str) -> None:
    features = [
        {"name": "carts", "aggregate": "count", "event_type": "cart_add", "window": "1d"},
        {"name": "views", "aggregate": "count", "event_type": "page_view", "window": "1d"},
        {"name": "refunds", "aggregate": "count", "event_type": "refund", "window": "1h"},
        {
            "name": "mean_refund",
            "aggregate": "mean",
            "field": "amount",
            "event_type": "refund",
            "window": "1h",
        },
        {"name": "cart_rate", "kind": "derived", "expr": "carts / views"},
        {"name": "per_refund", "kind": "derived", "expr": "carts / refunds"},
        {"name": "null_in", "kind": "derived", "expr": "1 + mean_refund"},
        {"name": "nested", "kind": "derived", "expr": "-(cart_rate * 2) + 0.5"},
    ]
    (got,) = values(engine, features, EVENTS, [("c1", at())])
    assert got == {
        "carts": 3,
        "views": 3,
        "refunds": 0,
        "mean_refund": None,
        "cart_rate": 1.0,
        "per_refund": None,
        "null_in": None,
        "nested": -1.5,
    }


@pytest.mark.parametrize("engine", ENGINES)
def test_attributes_as_of(engine: str) -> None:
    attrs = [
        {
            "customer_id": "c1",
            "attribute": "plan",
            "value": "free",
            "valid_from": at(days=-30),
            "available_at": at(days=-30),
            "source": "crm",
        },
        # Valid from -5d but only loaded at -1d: invisible before -1d.
        {
            "customer_id": "c1",
            "attribute": "plan",
            "value": "pro",
            "valid_from": at(days=-5),
            "available_at": at(days=-1),
            "source": "crm",
        },
        {
            "customer_id": "c1",
            "attribute": "signup",
            "value": "2023-12-31",
            "valid_from": at(days=-30),
            "available_at": at(days=-30),
            "source": "crm",
        },
        {
            "customer_id": "c1",
            "attribute": "consent",
            "value": "yes",
            "valid_from": at(days=-30),
            "available_at": at(days=-30),
            "source": "billing",
        },
    ]
    features = [
        {"name": "plan", "kind": "attribute", "attribute": "plan", "source": "crm"},
        {"name": "tenure", "kind": "attribute", "attribute": "signup", "type": "days_since"},
        {"name": "consent", "kind": "attribute", "attribute": "consent", "type": "boolean"},
        {"name": "crm_consent", "kind": "attribute", "attribute": "consent", "source": "crm"},
    ]
    got = values(engine, [*features], [], [("c1", at(days=-2)), ("c1", at()), ("c2", at())], attrs)
    assert got[0] == {"plan": "free", "tenure": 8.0, "consent": True, "crm_consent": None}
    assert got[1] == {"plan": "pro", "tenure": 10.0, "consent": True, "crm_consent": None}
    assert got[2] == {"plan": None, "tenure": None, "consent": None, "crm_consent": None}


@pytest.mark.parametrize("engine", ENGINES)
def test_a_late_event_never_changes_the_value_as_of_an_earlier_time(engine: str) -> None:
    """The acceptance test: an event inside the window but available after as_of is invisible as of then."""
    features = [
        {"name": "purchases_7d", "aggregate": "count", "event_type": "purchase", "window": "7d"},
        {"name": "spend_7d", "aggregate": "sum", "field": "amount", "window": "7d"},
        {"name": "last_amount", "aggregate": "last", "field": "amount", "window": "lifetime"},
        {
            "name": "since_purchase",
            "aggregate": "time_since_last",
            "event_type": "purchase",
            "window": "lifetime",
        },
        {"name": "views", "kind": "session", "aggregate": "count", "event_type": "purchase"},
    ]
    on_time = ev("a", "purchase", at(days=-2), amount=10.0)
    late = ev("late", "purchase", at(minutes=-5), avail=at(days=1), amount=99.0)  # happened, not yet known
    queries = [("c1", at()), ("c1", at(days=1))]
    without = values(engine, features, [on_time], queries[:1])
    with_late = values(engine, features, [on_time, late], queries)
    assert (
        with_late[0]
        == without[0]
        == {
            "purchases_7d": 1,
            "spend_7d": 10.0,
            "last_amount": 10.0,
            "since_purchase": 2 * 86400.0,
            "views": 0,
        }
    )
    # Once available it counts.
    assert with_late[1]["purchases_7d"] == 2 and with_late[1]["last_amount"] == 99.0
