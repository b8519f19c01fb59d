"""Eligibility ``unless_event_type`` (issue 19 item 8): a customer whose inbox bounced, complained or unsubscribed
is not eligible for an email action from then on, the same in training (labels), batch scoring (population) and
online serving (action rules), so engagement from an unreachable inbox is not trained on as a signal."""

from __future__ import annotations

import pyarrow as pa
from tests.labels.test_labels import ALIGN, WEEK, day, ev, log

from propensity.config.actions import Action
from propensity.labels.labels import build_labels
from propensity.scoring.population import eligibility
from propensity.serving.action_rules import ActionRules

UNREACHABLE = ["email_bounce", "spam_complaint", "unsubscribe"]


def test_unreachable_inboxes_are_not_eligible_in_training_scoring_and_serving() -> None:
    con = log([
        ev("a", "campaign_sent", day(1), campaign_id="c1"),
        ev("a", "purchase", day(3), campaign_id="c1"),
        ev("a", "email_bounce", day(4), campaign_id="c1"),
        ev("a", "campaign_sent", day(9), campaign_id="c2"),  # after the bounce: no row
        ev("b", "campaign_sent", day(2), campaign_id="c1"),
        ev("b", "unsubscribe", day(8), available_at=day(10)),  # known only from day 10
        ev("b", "campaign_sent", day(9), campaign_id="c2"),  # the unsubscribe was not known yet: a row
        ev("b", "campaign_sent", day(11), campaign_id="c3"),
        ev("c", "page_view", day(1)),
    ])  # fmt: skip
    respond = Action.model_validate(
        {"template": "respond", "eligibility": {"unless_event_type": UNREACHABLE}}
    )
    assert "unsubscribe" in respond.event_types()
    t = build_labels(con, respond, [day(0), day(7)], slide=WEEK, align=ALIGN, data_end=day(30))
    assert [(r["customer_id"], r["as_of"], r["campaign_id"]) for r in t.to_pylist()] == [
        ("a", day(1), "c1"), ("b", day(2), "c1"), ("b", day(9), "c2"),
    ]  # fmt: skip
    buy = Action.model_validate({"name": "buy_email", "template": "buy",
                                 "eligibility": {"unless_event_type": UNREACHABLE}})  # fmt: skip
    t = build_labels(con, buy, [day(7), day(14)], slide=WEEK, align=ALIGN, data_end=day(40))
    assert [(r["customer_id"], r["as_of"].day) for r in t.to_pylist()] == [("b", 8), ("c", 8), ("c", 15)]
    # Batch scoring at day 12: a bounced, b unsubscribed (known since day 10), c reachable.
    mask = eligibility(con, pa.array(["a", "b", "c"]), {"buy_email": buy}, day(12))
    assert mask["buy_email"].tolist() == [False, False, True]
    # Online: the rule is a lifetime count of those events; cold start (no events) stays eligible.
    rules = ActionRules([buy])
    unless = next(f.name for f in rules.features if f.name.endswith("__unless"))
    assert rules.eligible("buy_email", {unless: 1}, known=True) is False
    assert rules.eligible("buy_email", {unless: 0}, known=True) is True
    assert rules.eligible("buy_email", {}, known=False) is True
