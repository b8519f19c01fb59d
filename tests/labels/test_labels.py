"""Actions, eligibility and labels on small hand-built event logs where every answer can be checked by eye."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from propensity.config.actions import Action
from propensity.config.errors import SpecError
from propensity.config.spec import parse_spec
from propensity.config.training import SpineSettings
from propensity.core.event import ATTRIBUTES_DDL, EVENT_SCHEMA, EVENTS_DDL
from propensity.labels.labels import build_labels
from propensity.labels.spines import grid_cutoffs, matured_cutoffs

ALIGN = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday
WEEK = timedelta(days=7)


def day(d: float) -> datetime:
    return ALIGN + timedelta(days=d)


def log(
    events: list[dict[str, Any]], attributes: list[tuple[str, str, str, datetime]] = ()
) -> duckdb.DuckDBPyConnection:  # type: ignore[assignment]
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'").fetchall()
    con.execute(EVENTS_DDL).fetchall()
    con.execute(ATTRIBUTES_DDL).fetchall()
    rows: dict[str, list[Any]] = {f.name: [] for f in EVENT_SCHEMA}
    for i, e in enumerate(events):
        for f in EVENT_SCHEMA:
            v = e.get(f.name)
            if f.name == "event_id":
                v = f"e{i}"
            elif f.name == "available_at":
                v = e.get("available_at", e["event_time"])
            elif f.name == "ingested_at":
                v = e["event_time"]
            rows[f.name].append(v)
    con.register("_ev", pa.table(rows, schema=EVENT_SCHEMA))
    con.execute("INSERT INTO events SELECT * FROM _ev").fetchall()
    for cid, attr, value, valid in attributes:
        con.execute(
            "INSERT INTO attributes VALUES (?, ?, ?, ?, ?, 'test', ?)",
            [cid, attr, value, valid, valid, valid],
        ).fetchall()
    return con


def ev(customer: str, etype: str, t: datetime, **kw: Any) -> dict[str, Any]:
    return {"customer_id": customer, "event_type": etype, "event_time": t, **kw}


def labels(
    con: duckdb.DuckDBPyConnection, action: dict[str, Any], cutoffs: list[datetime], data_end: datetime
) -> list[tuple[str, str, int]]:
    a = Action.model_validate(action)
    t = build_labels(con, a, cutoffs, slide=WEEK, align=ALIGN, data_end=data_end)
    return [(r["customer_id"], r["as_of"].date().isoformat(), r["label"]) for r in t.to_pylist()]


def test_templates_fill_defaults_and_keys_override_them() -> None:
    a = Action.model_validate(
        {"template": "churn", "horizon": "60d", "eligibility": {"active_within": "14d"}}
    )
    assert (a.name, str(a.horizon), a.outcome, str(a.eligibility.active_within)) == (
        "churn_60d",
        "60d",
        "absent",
        "14d",
    )
    custom = Action.model_validate(
        {"name": "big_buy", "target": {"event_type": "purchase", "where": "amount > 100"}, "horizon": "14d"}
    )
    assert custom.target.event_type == ["purchase"] and custom.template is None


def test_spec_errors_name_the_action_key() -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({"actions": [{"template": "buy"}, {"template": "buy"}]})
    assert "actions[1].name" in str(err.value) and "already used" in str(err.value)
    with pytest.raises(SpecError) as err:
        parse_spec({"actions": [{"name": "x", "target": {"event_type": "teleport"}, "horizon": "7d"}]})
    assert "actions[0]" in str(err.value) and "teleport" in str(err.value)
    with pytest.raises(SpecError) as err:
        parse_spec(
            {
                "actions": [
                    {"name": "x", "target": {"event_type": "purchase", "where": "amount >"}, "horizon": "7d"}
                ]
            }
        )
    assert "actions[0].target.where" in str(err.value)


def test_buy_label_is_about_the_half_open_window_after_the_cutoff() -> None:
    con = log([
        ev("a", "page_view", day(0)),
        ev("a", "purchase", day(7)),  # exactly at the cutoff: not in (t, t+7d]
        ev("a", "purchase", day(21)),  # exactly at t+7d for t=day 14: in
        ev("b", "page_view", day(1)),
    ])  # fmt: skip
    got = labels(con, {"template": "buy"}, [day(7), day(14)], data_end=day(40))
    assert got == [
        ("a", "2024-01-08", 0),
        ("b", "2024-01-08", 0),
        ("a", "2024-01-15", 1),
        ("b", "2024-01-15", 0),
    ]


def test_customers_appear_only_once_known_and_unmatured_rows_are_left_out() -> None:
    con = log([ev("a", "page_view", day(0)), ev("late", "page_view", day(10)), ev("a", "purchase", day(30))])
    got = labels(con, {"template": "buy"}, [day(7), day(14), day(21), day(28)], data_end=day(30))
    # "late" is unknown at day 7; day 28's window ends at day 35 > data end, so it is not matured.
    assert got == [
        ("a", "2024-01-08", 0),
        ("a", "2024-01-15", 0),
        ("late", "2024-01-15", 0),
        ("a", "2024-01-22", 0),
        ("late", "2024-01-22", 0),
    ]


def test_churn_eligibility_uses_only_visible_activity_and_label_is_absence() -> None:
    con = log([
        ev("active", "page_view", day(20)),
        ev("active", "page_view", day(40)),  # activity in (t, t+30d]: not churned
        ev("quiet", "page_view", day(10)),  # active in the 30 days before day 28, then nothing
        ev("old", "page_view", day(-20)),  # too long ago to be eligible at day 28
        ev("hidden", "page_view", day(20), available_at=day(29)),  # happened in time, known too late
    ])  # fmt: skip
    got = labels(con, {"template": "churn"}, [day(28)], data_end=day(70))
    assert got == [("active", "2024-01-29", 0), ("quiet", "2024-01-29", 1)]


def test_renew_needs_a_subscriber_due_within_the_horizon() -> None:
    con = log(
        [
            ev("due", "renewal", day(10)),  # due again at day 40, in (28, 58]
            ev("due", "renewal", day(40)),
            ev("notdue", "subscription_start", day(-10)),  # due at day 20, before the window
            ev("free", "renewal", day(10)),
        ],
        attributes=[
            ("due", "plan", "basic", day(-100)),
            ("notdue", "plan", "plus", day(-100)),
            ("free", "plan", "free", day(-100)),
        ],
    )
    got = labels(con, {"template": "renew"}, [day(28)], data_end=day(70))
    assert got == [("due", "2024-01-29", 1)]


def test_respond_rows_are_sends_scored_as_of_the_send_and_match_the_campaign() -> None:
    con = log([
        ev("a", "campaign_sent", day(1), campaign_id="c1"),
        ev("a", "purchase", day(3), campaign_id="c1"),
        ev("b", "campaign_sent", day(2), campaign_id="c1"),
        ev("b", "purchase", day(3), campaign_id="other"),  # another campaign: not a response
        ev("b", "campaign_sent", day(9), campaign_id="c2"),
        ev("b", "coupon_redemption", day(17), campaign_id="c2"),  # after 7 days: too late
    ])  # fmt: skip
    a = Action.model_validate({"template": "respond"})
    t = build_labels(con, a, [day(0), day(7)], slide=WEEK, align=ALIGN, data_end=day(30))
    assert [(r["customer_id"], r["as_of"], r["campaign_id"], r["label"]) for r in t.to_pylist()] == [
        ("a", day(1), "c1", 1), ("b", day(2), "c1", 0), ("b", day(9), "c2", 0),
    ]  # fmt: skip


def test_gap_and_label_delay_shift_the_window_and_maturity() -> None:
    con = log([ev("a", "page_view", day(0)), ev("a", "purchase", day(9))])
    # window (t + 7d, t + 14d]; a purchase 2 days after the cutoff does not count, one 9 days after does.
    got = labels(con, {"template": "buy", "gap": "7d"}, [day(0)], data_end=day(30))
    assert got == [("a", "2024-01-01", 1)]
    a = Action.model_validate({"template": "buy", "label_delay": "3d"})
    assert matured_cutoffs([day(0), day(7)], a, day(16)) == [day(0)]


def test_grid_cutoffs_start_after_the_lookback_on_the_grid() -> None:
    s = SpineSettings(slide="7d", lookback="14d", align=ALIGN)
    assert grid_cutoffs(s, day(2.5), day(40)) == [day(14), day(21), day(28), day(35)]
