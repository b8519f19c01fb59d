"""Spark equals DuckDB for labels and eligibility: every template, a where-filtered custom action, lifetime
activity, and trigger windows ending at a time the trigger holds (in a project time zone), on random logs with
late, duplicated and out-of-order events, attribute versions and campaign sends."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from test_labels import ALIGN, day, log

from propensity.config.actions import Action
from propensity.labels.labels import build_labels, build_labels_spark

pytestmark = pytest.mark.slow

ACTIONS = TypeAdapter(list[Action]).validate_python(
    [
        {"template": "buy"},
        {"template": "churn"},
        {"template": "upgrade"},
        {"template": "renew"},
        {"template": "respond"},
        {
            "name": "big_web_buy_3d",
            "target": {"event_type": "purchase", "where": "amount >= 20 and channel == 'web'"},
            "horizon": "3d",
            "gap": "1d",
            "eligibility": {"active_within": "14d", "active_event_type": ["page_view", "purchase"]},
        },
        {
            "name": "buy_ever_active",
            "target": {"event_type": "purchase"},
            "horizon": "10d",
            "eligibility": {"active_within": "lifetime"},
        },
        {
            "name": "respond_until",
            "trigger": {"event_type": "campaign_sent"},
            "target": {"event_type": ["purchase", "coupon_redemption"], "same_campaign": True},
            "horizon": "until properties.end_date",
            "max_horizon": "14d",
        },
    ]
)
TYPES = ["page_view", "purchase", "campaign_sent", "coupon_redemption", "plan_upgrade", "subscription_start",
         "renewal"]  # fmt: skip


@st.composite
def logs(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[tuple[str, str, str, Any]]]:
    events = []
    for _ in range(draw(st.integers(1, 60))):
        t = day(draw(st.integers(0, 70 * 24)) / 24)
        late = draw(st.sampled_from([0, 0, 0, 1, 5]))
        events.append(
            {
                "customer_id": draw(st.sampled_from(["a", "b", "c", "d"])),
                "event_type": draw(st.sampled_from(TYPES)),
                "event_time": t,
                "available_at": t + timedelta(days=late),
                "amount": draw(st.sampled_from([None, 5.0, 20.0, 99.0])),
                "channel": draw(st.sampled_from([None, "web", "app"])),
                "campaign_id": draw(st.sampled_from([None, "k1", "k2"])),
                "properties": json.dumps(
                    {
                        "end_date": draw(
                            st.sampled_from(
                                [
                                    "2024-01-20",
                                    "2024-03-10T18:00:00",
                                    "2024-02-01T00:00:00Z",
                                    "2024-03-31",
                                    "soon",
                                ]
                            )
                        )
                    }
                ),
            }
        )
    events += draw(st.lists(st.sampled_from(events), max_size=5))  # duplicates (as different ids)
    attrs = [
        (
            draw(st.sampled_from(["a", "b", "c", "d"])),
            "plan",
            draw(st.sampled_from(["free", "pro", "team"])),
            day(draw(st.integers(-5, 60))),
        )
        for _ in range(draw(st.integers(0, 6)))
    ]
    return events, attrs


@settings(
    max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(batch=st.lists(logs(), min_size=8, max_size=8))
def test_spark_labels_equal_duckdb_labels(spark: Any, batch: Any) -> None:
    # Eight random logs per example, each with its own customers: one Spark job per action covers them all.
    events = [{**e, "customer_id": f"{k}{e['customer_id']}"} for k, (evs, _) in enumerate(batch) for e in evs]
    attrs = [(f"{k}{c}", *rest) for k, (_, ats) in enumerate(batch) for c, *rest in ats]
    con = log(events, attrs)
    ev = spark.createDataFrame(
        con.sql("SELECT * REPLACE (CAST(properties AS VARCHAR) AS properties) FROM events").to_arrow_table()
    )
    at = spark.createDataFrame(con.sql("SELECT * FROM attributes").to_arrow_table())
    week = timedelta(days=7)
    cutoffs = [ALIGN + k * week for k in range(1, 9)]
    for action in ACTIONS:
        kw: dict[str, Any] = {"slide": week, "data_end": day(70), "zone": "America/New_York"}
        duck = build_labels(con, action, cutoffs, **kw)
        other = build_labels_spark(spark, ev, at, action, cutoffs, **kw)
        assert duck.equals(other), f"{action.name}: duckdb {duck.to_pylist()} != spark {other.to_pylist()}"
