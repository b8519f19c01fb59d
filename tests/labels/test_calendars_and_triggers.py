"""Calendars and cutoffs (project time zone, calendar months, explicit cutoffs, lifetime activity) and trigger rows
(one per trigger event, windows ending at a time the trigger carries): known answers checked by eye."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from tests.labels.test_labels import day, ev, labels, log

from propensity.config.actions import Action
from propensity.config.calendar import Slide, add_months, local_time
from propensity.config.errors import SpecError
from propensity.config.spec import parse_spec
from propensity.labels.labels import build_labels
from propensity.labels.spines import grid_cutoffs, next_cutoff

NY = ZoneInfo("America/New_York")


def ny(y: int, m: int, d: int, h: int = 0) -> datetime:
    return datetime(y, m, d, h, tzinfo=NY).astimezone(UTC)


def test_a_date_alone_is_midnight_in_the_given_zone() -> None:
    assert local_time("2017-12-01", "America/New_York") == datetime(2017, 12, 1, 5, tzinfo=UTC)
    assert local_time("2017-07-01", "America/New_York") == datetime(2017, 7, 1, 4, tzinfo=UTC)  # DST
    assert local_time("2017-12-01T08:30", "Europe/Paris") == datetime(2017, 12, 1, 7, 30, tzinfo=UTC)
    assert local_time("2017-12-01T08:30:00Z", "America/New_York") == datetime(2017, 12, 1, 8, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="is not a time"):
        local_time("01/12/2017", "UTC")


def test_calendar_months_keep_the_wall_time_and_clamp_the_day() -> None:
    jan31 = local_time("2017-01-31", "America/New_York")
    assert [add_months(jan31, k, "America/New_York") for k in (1, 2, 3)] == [
        ny(2017, 2, 28), ny(2017, 3, 31), ny(2017, 4, 30)  # March crosses DST: still local midnight
    ]  # fmt: skip
    assert str(Slide.parse("3mo")) == "3mo" and Slide.parse("3mo").timedelta == timedelta(days=90)
    with pytest.raises(ValueError, match="not a slide"):
        Slide.parse("1 month")


def test_spec_times_without_an_offset_are_read_in_the_project_zone() -> None:
    spec = parse_spec(
        {
            "timezone": "America/New_York",
            "training": {"spine": {"slide": "1mo", "data_end": "2017-12-01", "cutoffs": ["2017-06-01"]}},
        }
    )
    spine = spec.training.spine
    assert spine.data_end == ny(2017, 12, 1) and spine.cutoffs == [ny(2017, 6, 1)]
    assert spine.align == ny(2024, 1, 1)  # the default align is a local midnight too
    assert parse_spec({}).training.spine.align == datetime(2024, 1, 1, tzinfo=UTC)
    with pytest.raises(SpecError, match="timezone: 'Mars/Olympus' is not a time zone"):
        parse_spec({"timezone": "Mars/Olympus"})
    with pytest.raises(SpecError, match=r"training.spine.data_end: '2017-13-01' is not a time"):
        parse_spec({"training": {"spine": {"data_end": "2017-13-01"}}})


def test_monthly_cutoffs_fall_on_local_midnight_of_the_first_across_dst() -> None:
    spec = parse_spec(
        {"timezone": "America/New_York", "training": {"spine": {"slide": "1mo", "lookback": "30d"}}}
    )
    cuts = grid_cutoffs(spec.training.spine, ny(2017, 1, 3, 9), ny(2017, 6, 15), zone="America/New_York")
    assert cuts == [ny(2017, 2, 1), ny(2017, 3, 1), ny(2017, 4, 1), ny(2017, 5, 1), ny(2017, 6, 1)]
    assert cuts[3] - cuts[2] == timedelta(days=30)  # April: 30 days; the March step crossed DST (23 hours)
    assert cuts[2] - cuts[1] == timedelta(days=31, hours=-1)
    assert next_cutoff(spec.training.spine, cuts, cuts[-1], "America/New_York") == ny(2017, 7, 1)


def test_explicit_cutoffs_replace_the_grid_within_start_and_end() -> None:
    spec = parse_spec(
        {"training": {"spine": {"cutoffs": ["2024-01-20", "2024-01-03", "2024-03-01"], "end": "2024-02-01"}}}
    )
    assert grid_cutoffs(spec.training.spine, day(0), day(90)) == [day(2), day(19)]


def test_labels_at_irregular_cutoffs_equal_the_rule() -> None:
    con = log([
        ev("a", "page_view", day(0)),
        ev("a", "purchase", day(5)),  # in (day 2, day 9]
        ev("b", "page_view", day(4)),  # b is unknown at day 2
        ev("b", "purchase", day(31)),  # in (day 30, day 37]
    ])  # fmt: skip
    got = labels(con, {"template": "buy"}, [day(2), day(30)], data_end=day(60))
    assert got == [("a", "2024-01-03", 1), ("a", "2024-01-31", 0), ("b", "2024-01-31", 1)]


def test_active_within_lifetime_means_any_activity_visible_by_the_cutoff() -> None:
    con = log([
        ev("old", "purchase", day(-300)),
        ev("hidden", "purchase", day(1), available_at=day(20)),  # happened before day 14, known only later
        ev("never", "page_view", day(1)),  # known, but no purchase ever
        ev("hidden", "purchase", day(15)),
    ])  # fmt: skip
    action = {
        "template": "churn",
        "target": {"event_type": "purchase"},
        "eligibility": {"active_within": "lifetime"},
    }
    assert labels(con, action, [day(14), day(28)], data_end=day(90)) == [
        ("old", "2024-01-15", 1),
        ("hidden", "2024-01-29", 1),
        ("old", "2024-01-29", 1),
    ]


def respond(**kw: object) -> Action:
    base = {"template": "respond", "target": {"event_type": "coupon_redemption", "same_campaign": True}}
    return Action.model_validate({**base, **kw})


def test_every_trigger_event_is_a_row_with_its_trigger_id() -> None:
    con = log([
        ev("a", "campaign_sent", day(1), campaign_id="c1"),
        ev("a", "campaign_sent", day(1), campaign_id="c2"),  # same instant, another campaign: its own row
        ev("a", "coupon_redemption", day(3), campaign_id="c2"),
    ])  # fmt: skip
    t = build_labels(con, respond(), [day(0)], until=day(7), data_end=day(30))
    assert [(r["trigger_id"], r["campaign_id"], r["label"]) for r in t.to_pylist()] == [
        ("e0", "c1", 0), ("e1", "c2", 1)
    ]  # fmt: skip


def test_a_window_may_end_at_the_triggers_end_date_in_the_project_zone() -> None:
    # Campaign c1 ends 2024-01-10 (a date: the end of that day in New York, just before 2024-01-11 05:00 UTC).
    sent = {"campaign_id": "c1", "properties": '{"end_date": "2024-01-10"}'}
    con = log([
        ev("in", "campaign_sent", day(1), **sent),
        ev("in", "coupon_redemption", day(10) + timedelta(hours=4, minutes=59), campaign_id="c1"),  # 23:59 NY
        ev("late", "campaign_sent", day(1), **sent),
        ev("late", "coupon_redemption", day(10) + timedelta(hours=5), campaign_id="c1"),  # Jan 11 00:00 NY
        ev("capped", "campaign_sent", day(1), campaign_id="c1", properties='{"end_date": "2024-12-31"}'),
        ev("capped", "coupon_redemption", day(40), campaign_id="c1"),  # after the 30-day cap
        ev("nodate", "campaign_sent", day(1), campaign_id="c1", properties='{"end_date": "soon"}'),
        ev("nodate", "coupon_redemption", day(20), campaign_id="c1"),  # unreadable end: the cap applies
    ])  # fmt: skip
    action = respond(horizon="until properties.end_date", max_horizon="30d")
    t = build_labels(con, action, [day(0)], until=day(7), data_end=day(60), zone="America/New_York")
    got = {r["customer_id"]: (r["label"], r["label_end"]) for r in t.to_pylist()}
    end = datetime(2024, 1, 11, 5, tzinfo=UTC) - timedelta(microseconds=1)
    assert got == {
        "in": (1, end),
        "late": (0, end),
        "capped": (0, day(31)),
        "nodate": (1, day(31)),
    }
    # A row matures when its own window has closed: on 2024-01-20 only the campaign that ended has.
    t = build_labels(con, action, [day(0)], until=day(7), data_end=day(19), zone="America/New_York")
    assert sorted(t.column("customer_id").to_pylist()) == ["in", "late"]


def test_horizon_until_needs_a_cap_and_a_trigger() -> None:
    with pytest.raises(ValueError, match="needs a cap"):
        respond(horizon="until properties.end_date")
    with pytest.raises(ValueError, match="needs a trigger"):
        Action.model_validate(
            {"template": "buy", "horizon": "until properties.end_date", "max_horizon": "9d"}
        )
    a = respond(horizon="until properties.end_date", max_horizon="90d")
    assert (a.name, str(a.horizon), a.horizon_until) == ("respond_90d", "90d", "properties.end_date")
    assert Action.model_validate(a.definition()) == a  # stored definitions load back


def test_a_date_only_as_of_on_the_command_line_is_midnight_in_the_project_zone() -> None:
    from propensity.cli._common import parse_time

    assert parse_time("2017-12-01", "America/New_York") == datetime(2017, 12, 1, 5, tzinfo=UTC)
    assert parse_time("2017-12-01T00:00:00+00:00", "America/New_York") == datetime(2017, 12, 1, tzinfo=UTC)
    assert parse_time(None, "America/New_York") is None
