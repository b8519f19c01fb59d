"""Active days (``count_distinct`` over ``event_date``, the project's calendar date) and trigger features (a field
of the row's trigger event): known answers, and online = offline across daylight-saving changes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest
from feature_helpers import insert_events, new_log, same, us
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from propensity.config.actions import Action
from propensity.config.spec import parse_spec
from propensity.features import OnlineFeatureEngine, compute_features, parse_features

H = 3_600_000_000
DST_STARTS = us(datetime(2024, 3, 10, 7, tzinfo=UTC))  # 02:00 EST -> 03:00 EDT
DST_ENDS = us(datetime(2024, 11, 3, 6, tzinfo=UTC))  # 02:00 EDT -> 01:00 EST


def days_features(zone: str) -> list[Any]:
    return parse_features(
        [
            {"name": "days_7d", "aggregate": "count_distinct", "field": "event_date", "window": "7d", "timezone": zone},
            {"name": "days_2d_exact", "aggregate": "count_distinct", "field": "event_date", "window": "2d",
             "bucket": "exact", "timezone": zone},
            {"name": "purchase_days", "aggregate": "count_distinct", "field": "event_date", "event_type": "purchase",
             "window": "lifetime", "timezone": zone},
            {"name": "first_day", "aggregate": "min", "field": "event_date", "window": "lifetime", "timezone": zone},
            {"name": "on_the_day", "aggregate": "count", "where": "event_date == '2024-03-10'", "window": "lifetime",
             "timezone": zone},
        ]
    )  # fmt: skip


def test_event_days_are_counted_in_the_projects_calendar() -> None:
    con = new_log()
    # 04:30 and 05:30 UTC on 2024-03-09: one UTC day, but 23:30 on the 8th and 00:30 on the 9th in New York.
    times = [datetime(2024, 3, 9, 4, 30, tzinfo=UTC), datetime(2024, 3, 9, 5, 30, tzinfo=UTC)]
    insert_events(
        con,
        [
            {
                "event_id": f"e{i}",
                "customer_id": "c",
                "event_type": "purchase",
                "event_time": t,
                "available_at": t,
            }
            for i, t in enumerate(times)
        ],
    )
    spine = pa.table(
        {
            "customer_id": ["c"],
            "as_of": pa.array([datetime(2024, 3, 12, tzinfo=UTC)], pa.timestamp("us", "UTC")),
        }
    )
    ny = compute_features(con, days_features("America/New_York"), spine).to_pylist()[0]
    utc = compute_features(con, days_features("UTC"), spine).to_pylist()[0]
    assert (ny["days_7d"], ny["purchase_days"], ny["first_day"]) == (2, 2, "2024-03-08")
    assert (utc["days_7d"], utc["purchase_days"], utc["first_day"]) == (1, 1, "2024-03-09")


def test_a_feature_takes_the_project_zone_and_only_event_date_features_change_version() -> None:
    feats = [
        {"name": "days_30d", "aggregate": "count_distinct", "field": "event_date", "window": "30d"},
        {"name": "n_7d", "aggregate": "count", "window": "7d"},
    ]
    ny = parse_spec({"timezone": "America/New_York", "features": feats}).features
    utc = parse_spec({"features": feats}).features
    assert ny[0].canonical()["timezone"] == "America/New_York" and utc[0].canonical()["timezone"] == "UTC"
    assert ny[1].canonical() == utc[1].canonical() and "timezone" not in utc[1].canonical()
    with pytest.raises(ValueError, match="event_date is for features"):
        Action.model_validate(
            {"template": "buy", "target": {"event_type": "purchase", "where": "event_date > '2024'"}}
        )


@st.composite
def dst_events(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for i in range(draw(st.integers(1, 25))):
        anchor = draw(st.sampled_from([DST_STARTS, DST_ENDS]))
        et = anchor + draw(st.integers(-30 * H, 30 * H))
        out.append(
            {
                "event_id": f"e{i}",
                "customer_id": draw(st.sampled_from(["a", "b"])),
                "event_type": draw(st.sampled_from(["purchase", "page_view"])),
                "event_time": et,
                "available_at": et + draw(st.sampled_from([0, 0, H, 30 * H])),
            }
        )
    return out


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Kathmandu"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=dst_events(), picks=st.lists(st.integers(-40 * H, 40 * H), min_size=1, max_size=6))
def test_event_days_online_equal_offline_across_dst(
    zone: str, events: list[dict[str, Any]], picks: list[int]
) -> None:
    feats = days_features(zone)
    latest = max(e["available_at"] for e in events)
    queries = sorted({(c, latest + abs(p)) for c in ("a", "b") for p in picks})
    engine = OnlineFeatureEngine(feats)
    for e in sorted(events, key=lambda e: (e["available_at"], e["event_id"])):
        engine.apply(e)
    online = [engine.vector(c, t) for c, t in queries]
    con = new_log()
    insert_events(con, events)
    spine = pa.table(
        {
            "customer_id": [c for c, _ in queries],
            "as_of": pa.array([t for _, t in queries], pa.int64()).cast(pa.timestamp("us", "UTC")),
        }
    )
    offline = compute_features(con, feats, spine).to_pylist()
    for row, vec, (c, t) in zip(offline, online, queries, strict=True):
        for f, v in zip(feats, vec, strict=True):
            assert same(v, row[f.name]), f"{f.name} of {c} at {t}: online {v!r}, offline {row[f.name]!r}"


TRIGGER_FEATURES = parse_features(
    [
        {"name": "campaign", "kind": "trigger", "field": "campaign_id"},
        {"name": "campaign_type", "kind": "trigger", "field": "properties.campaign_type"},
        {"name": "offers", "kind": "trigger", "field": "properties.offers", "type": "number"},
        {"name": "trigger_amount", "kind": "trigger", "field": "amount"},
        {"name": "sends_30d", "aggregate": "count", "event_type": "campaign_sent", "window": "30d"},
    ]
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sends=st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.integers(0, 10 * 24 * H),
            st.sampled_from([None, "Type A", "Type B"]),
            st.sampled_from([None, 3, 2.5, "12", " 7 ", "x", True]),
            st.sampled_from([0, 0, 5 * H]),
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_trigger_features_read_the_rows_trigger_event_online_as_offline(sends: list[tuple[Any, ...]]) -> None:
    t0 = us(datetime(2024, 1, 1, tzinfo=UTC))
    events = []
    for i, (c, dt, kind, offers, delay) in enumerate(sends):
        props = {k: v for k, v in (("campaign_type", kind), ("offers", offers)) if v is not None}
        events.append(
            {"event_id": f"s{i}", "customer_id": c, "event_type": "campaign_sent", "event_time": t0 + dt,
             "available_at": t0 + dt + delay, "campaign_id": f"k{i % 3}", "amount": None if i % 2 else 1.5,
             "properties": json.dumps(props)}
        )  # fmt: skip
    con = new_log()
    insert_events(con, events)
    engine = OnlineFeatureEngine(TRIGGER_FEATURES)
    for e in sorted(events, key=lambda e: (e["available_at"], e["event_id"])):
        engine.apply(e)
    end = max(e["available_at"] for e in events)
    # Each send as of the moment it was visible (as a respond row is), at the end, and a read for the wrong
    # customer or before the send was visible (null, both engines).
    rows = [(e["customer_id"], max(e["event_time"], e["available_at"]), e) for e in events]
    rows += [(e["customer_id"], end, e) for e in events]
    rows += [("z", end, events[0]), (events[0]["customer_id"], events[0]["event_time"] - 1, events[0])]
    rows += [(events[0]["customer_id"], end, None)]
    spine = pa.table(
        {
            "customer_id": [c for c, _, _ in rows],
            "as_of": pa.array([t for _, t, _ in rows], pa.int64()).cast(pa.timestamp("us", "UTC")),
            "trigger_id": pa.array([None if e is None else e["event_id"] for _, _, e in rows], pa.string()),
        }
    )
    offline = compute_features(con, TRIGGER_FEATURES, spine).to_pylist()
    for row, (c, t, e) in zip(offline, rows, strict=True):
        vec = engine.vector(c, max(t, end), trigger=e) if t >= end else None
        if vec is None:  # the engine answers at or after its floor: compare trigger values alone
            vec = OnlineFeatureEngine(TRIGGER_FEATURES).vector(c, t, trigger=e)
            names = ["campaign", "campaign_type", "offers", "trigger_amount"]
        else:
            names = [f.name for f in TRIGGER_FEATURES]
        got = dict(zip([f.name for f in TRIGGER_FEATURES], vec, strict=True))
        for n in names:
            assert same(got[n], row[n]), (
                f"{n} of {c} at {t} ({e and e['event_id']}): {got[n]!r} vs {row[n]!r}"
            )
    visible = [
        r for r, (c, t, e) in zip(offline, rows, strict=True) if e is not None and c == e["customer_id"]
    ]
    assert all(r["campaign"] is not None for r in visible[: len(events)])
    assert offline[-1]["campaign"] is None  # no trigger: null
