"""The decision policy: which rule decides each row, and each customer's next best action."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.scoring.test_score_store import make_run

from propensity.config.decisions import PolicySettings
from propensity.config.errors import SpecError
from propensity.config.spec import parse_spec
from propensity.core.event import ATTRIBUTES_DDL, EVENTS_DDL
from propensity.scoring.policy import (
    DecisionContext,
    PolicyError,
    attribute_values,
    consent_column,
    consent_json,
    decide,
    read_id_file,
    recent_activations,
    suppression_lists,
)
from propensity.scoring.score_store import ParquetScoreStore

ACTIONS = ("buy_7d", "churn_30d", "upgrade_30d")


def rows(*records: tuple[str, str, float | None], **columns: list[Any]) -> pa.Table:
    """(customer, action, score) records; score None means not eligible."""
    data: dict[str, list[Any]] = {
        "customer_id": [r[0] for r in records],
        "action": [r[1] for r in records],
        "score": [r[2] for r in records],
        "eligible": [r[2] is not None for r in records],
        "holdout_group": [None] * len(records),
        "consent": [None] * len(records),
    }
    data.update(columns)
    return pa.table(data)


def decided(
    table: pa.Table, policy: dict[str, Any] | None = None, **context: Any
) -> dict[tuple[str, str], tuple[Any, Any]]:
    out = decide(table, PolicySettings.model_validate(policy or {}), context=DecisionContext(**context))
    return {
        (r["customer_id"], r["action"]): (r["next_best_action"], r["decision_policy"])
        for r in out.to_pylist()
    }


def test_the_highest_positive_expected_value_wins() -> None:
    policy = {"actions": {"buy_7d": {"value": 40.0, "cost": 1.0}, "churn_30d": {"value": 100.0, "cost": 5.0}}}
    # c1: buy 0.3*40-1 = 11 vs churn 0.1*100-5 = 5 → buy; c2: buy 0.1*40-1 = 3 vs churn 0.5*100-5 = 45 → churn.
    out = decided(
        rows(
            ("c1", "buy_7d", 0.3), ("c1", "churn_30d", 0.1), ("c2", "buy_7d", 0.1), ("c2", "churn_30d", 0.5)
        ),
        policy,
    )
    assert out == {
        ("c1", "buy_7d"): ("buy_7d", "ev_max"), ("c1", "churn_30d"): ("buy_7d", "ev_lower"),
        ("c2", "buy_7d"): ("churn_30d", "ev_lower"), ("c2", "churn_30d"): ("churn_30d", "ev_max"),
    }  # fmt: skip


def test_each_rule_decides_in_order() -> None:
    policy = {
        "actions": {
            "buy_7d": {"threshold": 0.2, "channel": "email", "cost": 0.05},
            "churn_30d": {"cost": 0.4},
        },
        "consent": {"email": "consent_email"},
        "frequency_cap": {"max": 2, "period": "7d"},
    }
    table = rows(
        ("ctl", "buy_7d", 0.9), ("ctl", "churn_30d", 0.9),
        ("vip", "buy_7d", 0.9),
        ("cap", "buy_7d", 0.9),
        ("nocons", "buy_7d", 0.9),
        ("low", "buy_7d", 0.1), ("low", "churn_30d", None),
        ("neg", "churn_30d", 0.4),
        ("ok", "buy_7d", 0.5), ("ok", "churn_30d", 0.9),
        holdout_group=["control", "treatment", None, None, None, None, None, None, None, None],
        consent=[None, None, '{"email": true}', '{"email": true}', '{"email": false}', '{"email": true}', None,
                 None, '{"email": true}', None],
    )  # fmt: skip
    out = decided(table, policy, suppressed={"vip_list": frozenset({"vip"})},
                  recent_activations={"cap": 2, "ok": 1})  # fmt: skip
    assert out == {
        ("ctl", "buy_7d"): (None, "holdout_control"), ("ctl", "churn_30d"): (None, "holdout_control"),
        ("vip", "buy_7d"): (None, "suppressed:vip_list"),
        ("cap", "buy_7d"): (None, "frequency_cap"),
        ("nocons", "buy_7d"): (None, "no_consent:email"),
        ("low", "buy_7d"): (None, "below_threshold"), ("low", "churn_30d"): (None, "not_eligible"),
        ("neg", "churn_30d"): (None, "non_positive_ev"),
        ("ok", "buy_7d"): ("churn_30d", "ev_lower"), ("ok", "churn_30d"): ("churn_30d", "ev_max"),
    }  # fmt: skip


def test_unknown_consent_blocks_the_channel_unless_configured_otherwise() -> None:
    policy = {"default": {"channel": "sms"}, "consent": {"sms": "sms_ok"}}
    table = rows(("c1", "buy_7d", 0.5), consent=[None])
    assert decided(table, policy)[("c1", "buy_7d")] == (None, "no_consent:sms")
    assert decided(table, {**policy, "consent_when_unknown": True})[("c1", "buy_7d")] == ("buy_7d", "ev_max")
    other = rows(("c1", "buy_7d", 0.5), consent=['{"email": true}'])
    assert decided(other, policy)[("c1", "buy_7d")] == (None, "no_consent:sms")


def test_ties_go_to_the_first_action_by_name() -> None:
    out = decided(rows(("c1", "churn_30d", 0.4), ("c1", "buy_7d", 0.4)))
    assert out[("c1", "buy_7d")] == ("buy_7d", "ev_max")


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from(ACTIONS),
                  st.one_of(st.none(), st.floats(0.0, 1.0)), st.sampled_from([None, "treatment", "control"])),
        max_size=40, unique_by=lambda r: (r[0], r[1]),
    ),
    st.floats(0.0, 0.5),
)  # fmt: skip
@settings(max_examples=150, deadline=None)
def test_next_best_action_invariants(
    records: list[tuple[str, str, float | None, str | None]], threshold: float
) -> None:
    policy = PolicySettings.model_validate(
        {"actions": {"buy_7d": {"value": 40, "cost": 2}, "churn_30d": {"value": 10, "threshold": threshold}}}
    )
    table = rows(*[(c, a, s) for c, a, s, _ in records], holdout_group=[g for *_, g in records])
    out = decide(table, policy, context=DecisionContext()).to_pylist()
    by_customer: dict[str, list[dict[str, Any]]] = {}
    for r in out:
        by_customer.setdefault(r["customer_id"], []).append(r)
    for mine in by_customer.values():
        nba = {r["next_best_action"] for r in mine}
        assert len(nba) == 1  # the same on all of a customer's rows
        best = nba.pop()
        if any(r["holdout_group"] == "control" for r in mine):
            assert best is None
            continue
        ev = {r["action"]: r["score"] * policy.for_action(r["action"]).value - policy.for_action(r["action"]).cost
              for r in mine if r["decision_policy"] in ("ev_max", "ev_lower")}  # fmt: skip
        if best is None:
            assert not ev
        else:
            assert ev[best] == max(ev.values()) and ev[best] > 0
            chosen = next(r for r in mine if r["action"] == best)
            assert chosen["eligible"] and chosen["score"] >= policy.for_action(best).threshold
            assert chosen["decision_policy"] == "ev_max"


def test_empty_rows() -> None:
    out = decide(rows(), PolicySettings(), context=DecisionContext())
    assert out.num_rows == 0 and {"next_best_action", "decision_policy"} <= set(out.column_names)


# ------------------------------------------------------------------------------------------- the inputs
def _attributes(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(tmp_path / "a.duckdb"))
    con.execute("SET TimeZone = 'UTC'")
    con.execute(ATTRIBUTES_DDL)
    t = datetime(2026, 1, 1, tzinfo=UTC)
    for cid, attr, value, days in [
        ("c1", "consent_email", "true", 0), ("c1", "consent_email", "false", 10),
        ("c2", "consent_email", "yes", 0), ("c3", "do_not_contact", "1", 0), ("c4", "do_not_contact", "0", 0),
    ]:  # fmt: skip
        at = t + timedelta(days=days)
        con.execute(
            "INSERT INTO attributes VALUES (?, ?, ?, ?, ?, 'test', ?)", [cid, attr, value, at, at, at]
        )
    return con


def test_attributes_are_read_as_of_the_run(tmp_path: Path) -> None:
    con = _attributes(tmp_path)
    t = datetime(2026, 1, 5, tzinfo=UTC)
    assert attribute_values(con, "consent_email", t) == {"c1": "true", "c2": "yes"}
    assert attribute_values(con, "consent_email", t + timedelta(days=10))["c1"] == "false"
    consent = consent_json({"email": attribute_values(con, "consent_email", t)}, ["c1", "c2", "c9"])
    assert [json.loads(c) if c else None for c in consent] == [{"email": True}, {"email": True}, None]
    assert consent_json({}, ["c1"]) == [None]


def test_suppression_lists_from_a_file_and_an_attribute(tmp_path: Path) -> None:
    con = _attributes(tmp_path)
    (tmp_path / "vip.csv").write_text("customer_id,reason\nc7,board\n\nc8,press\n")
    policy = PolicySettings.model_validate(
        {"suppression": [{"name": "vip", "file": "vip.csv"}, {"name": "dnc", "attribute": "do_not_contact"}]}
    )
    lists = suppression_lists(con, policy, datetime(2026, 2, 1, tzinfo=UTC), tmp_path)
    assert lists == {"vip": frozenset({"c7", "c8"}), "dnc": frozenset({"c3"})}
    with pytest.raises(PolicyError, match=r"policies\.suppression: cannot read .*missing\.txt"):
        read_id_file(tmp_path / "missing.txt")


def test_unreachable_inboxes_are_suppressed_on_the_email_channel_only(tmp_path: Path) -> None:
    """Issue 19 item 8: a bounce, spam complaint or unsubscribe known by the run suppresses the customer's
    email-channel actions; other channels still reach them."""
    con = _attributes(tmp_path)
    con.execute(EVENTS_DDL)
    t = datetime(2026, 1, 10, tzinfo=UTC)
    for cid, kind, happened, known in [
        ("c1", "email_bounce", t - timedelta(days=3), t - timedelta(days=3)),
        ("c2", "unsubscribe", t - timedelta(days=1), t + timedelta(hours=1)),  # not known by the run yet
        ("c3", "campaign_open", t - timedelta(days=1), t - timedelta(days=1)),
        ("c4", "spam_complaint", t + timedelta(days=1), t + timedelta(days=1)),  # after the run
    ]:  # fmt: skip
        con.execute(
            "INSERT INTO events (event_id, customer_id, event_type, event_time, available_at, source, ingested_at) "
            "VALUES (?, ?, ?, ?, ?, 'test', ?)",
            [f"{cid}-{kind}", cid, kind, happened, known, known],
        )
    policy = {
        "actions": {"buy_7d": {"channel": "email", "value": 10.0}, "churn_30d": {"value": 5.0}},
        "consent": {"email": "consent_email"},
        "suppression": [{"name": "unreachable_email", "channel": "email",
                         "event_types": ["email_bounce", "spam_complaint", "unsubscribe"]}],
    }  # fmt: skip
    lists = suppression_lists(con, PolicySettings.model_validate(policy), t, tmp_path)
    assert lists == {"unreachable_email": frozenset({"c1"})}
    yes = '{"email": true}'
    table = rows(("c1", "buy_7d", 0.9), ("c1", "churn_30d", 0.5), ("c2", "buy_7d", 0.9),
                 consent=[yes, None, yes])  # fmt: skip
    out = decided(table, policy, suppressed=lists)
    assert out == {
        ("c1", "buy_7d"): ("churn_30d", "suppressed:unreachable_email"),
        ("c1", "churn_30d"): ("churn_30d", "ev_max"),
        ("c2", "buy_7d"): ("buy_7d", "ev_max"),
    }


def test_recent_activations_count_complete_runs_in_the_period(tmp_path: Path) -> None:
    store = ParquetScoreStore(tmp_path / "scores")
    now = datetime(2026, 3, 10, tzinfo=UTC)
    for days_ago, status in ((1, "complete"), (3, "complete"), (5, "blocked"), (9, "complete")):
        table, run = make_run(now - timedelta(days=days_ago), n_customers=2, status=status)
        store.write_run(table, run)
    policy = PolicySettings.model_validate({"frequency_cap": {"max": 2, "period": "7d"}})
    assert recent_activations(store, policy, now) == {"c0": 2, "c1": 2}
    assert recent_activations(store, PolicySettings(), now) == {}


def test_bad_policies_name_the_key() -> None:
    with pytest.raises(SpecError, match=r"actions\.buy_7d\.channel: 'sms' has no consent attribute"):
        parse_spec({"policies": {"actions": {"buy_7d": {"channel": "sms"}}}})
    with pytest.raises(SpecError, match=r"give `file:` .*`event_types:`"):
        parse_spec({"policies": {"suppression": [{"name": "x"}]}})
    with pytest.raises(SpecError, match=r"policies\.actions\.buy_7d\.threshold"):
        parse_spec({"policies": {"actions": {"buy_7d": {"threshold": 1.5}}}})


def test_the_vectorised_consent_column_equals_the_per_customer_json(tmp_path: Path) -> None:
    con = _attributes(tmp_path)
    ids = ["c1", "c2", "c3", "c4", "c9"]
    for t in (datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 20, tzinfo=UTC)):
        for consent in ({"email": "consent_email"}, {"sms": "do_not_contact", "email": "consent_email"}, {}):
            values = {ch: attribute_values(con, attr, t) for ch, attr in consent.items()}
            column = consent_column(con, consent, pa.array(ids, pa.string()), t)
            assert column.to_pylist() == consent_json(values, ids), (t, consent)
