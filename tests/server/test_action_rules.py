"""Online eligibility and fallback: the rules evaluated from online features agree with training's SQL
eligibility, ineligible customers get no score, actions without a model are served by the flagged fallback, and
the canary share is routed deterministically to the candidate bundle."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from tests.training.synthetic_project import START, build_workspace

from propensity.config.actions import Action
from propensity.events.log import DuckDBEventLog
from propensity.features.offline import compute_features
from propensity.labels.labels import build_labels
from propensity.scoring.fallback import fallback_scores
from propensity.scoring.model import ServingModel
from propensity.serving.action_rules import ActionRules
from propensity.serving.service import ScoringService
from propensity.serving.startup import production_model
from propensity.serving.store import InMemoryStore
from propensity.workspace import Workspace

SLIDE = timedelta(days=7)
CUTOFFS = [START + SLIDE * k for k in range(4, 17)]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("rules")
    yield build_workspace(root, customers=250, days=120, seed=11)


def _known_at(con, t: datetime) -> set[str]:  # type: ignore[no-untyped-def]
    rows = con.execute(
        """SELECT customer_id FROM (
               SELECT customer_id, min(greatest(event_time, available_at)) AS first FROM events GROUP BY 1
               UNION ALL
               SELECT customer_id, min(greatest(valid_from, available_at)) FROM attributes GROUP BY 1)
           GROUP BY 1 HAVING min(first) <= ?""",
        [t],
    ).fetchall()
    return {str(r[0]) for r in rows}


@pytest.mark.slow
def test_online_eligibility_matches_training_eligibility(synthetic: Workspace) -> None:
    actions = [a for a in synthetic.spec.actions if a.trigger is None]
    assert {a.name for a in actions} == {"buy_7d", "upgrade_30d", "renew_30d", "churn_30d"}
    rules = ActionRules(actions)
    names = [f.name for f in rules.features]
    with DuckDBEventLog(synthetic.db_path).connection(read_only=True) as con:
        customers = sorted(_known_at(con, CUTOFFS[-1]))
        spine = pa.table(
            {
                "customer_id": [c for _ in CUTOFFS for c in customers],
                "as_of": pa.array([t for t in CUTOFFS for _ in customers], pa.timestamp("us", tz="UTC")),
            }
        )
        values = compute_features(con, rules.features, spine).select(names).to_pylist()
        known = {t: _known_at(con, t) for t in CUTOFFS}
        checked = 0
        for action in actions:
            labelled = build_labels(
                con, action, CUTOFFS, slide=SLIDE, align=START, data_end=datetime(2100, 1, 1, tzinfo=UTC)
            )
            sql_eligible = set(
                zip(
                    labelled.column("customer_id").to_pylist(),
                    labelled.column("as_of").to_pylist(),
                    strict=True,
                )
            )
            for cid, t, row in zip(spine.column("customer_id").to_pylist(), spine.column("as_of").to_pylist(),
                                   values, strict=True):  # fmt: skip
                if cid not in known[t]:
                    continue  # training has no rows for customers not yet seen; serving flags them cold
                online = rules.eligible(action.name, row, known=True)
                assert online == ((cid, t) in sql_eligible), (action.name, cid, t, row)
                checked += 1
            # Every rule must cut somewhere in this data, or the comparison proves little.
            if action.eligibility.model_dump(exclude_none=True):
                assert 0 < len(sql_eligible) < sum(len(known[t]) for t in CUTOFFS), action.name
    assert checked > 4 * 1000


@pytest.mark.slow
def test_respond_is_eligible_at_each_send_and_fallback_matches_the_sql_fallback(synthetic: Workspace) -> None:
    respond = synthetic.spec.action("respond_7d")
    churn = synthetic.spec.action("churn_30d")
    rules = ActionRules([respond, churn])
    names = [f.name for f in rules.features]
    with DuckDBEventLog(synthetic.db_path).connection(read_only=True) as con:
        sends = build_labels(
            con, respond, CUTOFFS, slide=SLIDE, align=START, data_end=datetime(2100, 1, 1, tzinfo=UTC)
        )
        assert sends.num_rows > 50
        spine = sends.select(["customer_id", "as_of"])
        at_send = compute_features(con, rules.features, spine).select(names).to_pylist()
        assert all(rules.eligible("respond_7d", row, known=True) for row in at_send)
        # Two weeks after the send the response window (7 days) has closed, unless another send came.
        later = spine.set_column(1, "as_of", pa.array([t + timedelta(days=14) for t in spine.column("as_of").to_pylist()],
                                                      pa.timestamp("us", tz="UTC")))  # fmt: skip
        after = compute_features(con, rules.features, later).select(names).to_pylist()
        assert not all(rules.eligible("respond_7d", row, known=True) for row in after)
        # The online fallback (from online features) equals the SQL fallback (from the log) row for row.
        for action in (respond, churn):
            sql = fallback_scores(con, action, spine).column("score").to_pylist()
            online = [rules.fallback(action.name, row) for row in at_send]
            assert online == sql


def test_cold_customers_are_eligible_only_for_unconditional_actions() -> None:
    rules = ActionRules([Action.model_validate({"template": t}) for t in ("buy", "churn", "renew")])
    assert rules.eligible("buy_7d", {}, known=False) is True
    assert rules.eligible("churn_30d", {}, known=False) is False
    assert rules.eligible("renew_30d", {}, known=False) is False
    assert rules.eligible("unknown_action", {}, known=True) is None


def test_an_ineligible_answer_names_the_rule_that_excluded_it() -> None:
    actions = [Action.model_validate({"template": t}) for t in ("churn", "renew", "upgrade", "respond")]
    rules = ActionRules(actions)
    p = "rule__"
    assert "unknown customer" in (rules.excluded_by("churn_30d", {}, known=False) or "")
    churn = rules.excluded_by("churn_30d", {f"{p}churn_30d__active": 0}, known=True)
    assert churn is not None and churn.startswith("eligibility.active_within: no ") and "30d" in churn
    plan = rules.excluded_by("upgrade_30d", {f"{p}upgrade_30d__attribute": "free"}, known=True)
    assert plan == "eligibility.attribute: plan is 'free', which not_in excludes"
    assert "plan is unknown" in (rules.excluded_by("upgrade_30d", {}, known=True) or "")
    due = rules.excluded_by("renew_30d", {f"{p}renew_30d__attribute": "pro"}, known=True)
    assert due is not None and due.startswith("eligibility.due: no subscription_start or renewal")
    respond = rules.excluded_by("respond_7d", {}, known=True)
    assert respond is not None and respond.startswith("trigger: no campaign_sent in the last 7d")
    assert rules.excluded_by("respond_7d", {f"{p}respond_7d__trigger": 1}, known=True) is None


# ------------------------------------------------------------------------------------------ the service
@pytest.fixture(scope="module")
def served(workspace: Workspace) -> tuple[ScoringService, ServingModel]:
    """The trained server workspace (its bundle has buy; churn had too few rows) with rules for buy, churn and
    renew (no model)."""
    model = production_model(workspace)
    assert model is not None
    actions = [*workspace.spec.actions, Action.model_validate({"template": "renew"})]
    rules = ActionRules(actions)
    store = InMemoryStore([*workspace.spec.features, *rules.features])
    with DuckDBEventLog(workspace.db_path).connection(read_only=True) as con:
        store.rebuild(con)
    return ScoringService(store, model, rules=rules), model


def _customers(ws: Workspace) -> list[str]:
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        return [
            str(r[0]) for r in con.execute("SELECT DISTINCT customer_id FROM events ORDER BY 1").fetchall()
        ]


def test_ineligible_customers_get_no_score_and_model_less_actions_fall_back(
    served: tuple[ScoringService, ServingModel], workspace: Workspace
) -> None:
    service, model = served
    customers = _customers(workspace)
    # The data ended long ago, so nobody is active "now" (churn needs activity in the last 30 days) until a few
    # customers do something: their eligibility follows at once.
    now = datetime.now(UTC)
    fresh = customers[:5]
    service.store.apply(
        pa.table(
            {
                "event_id": [f"fresh-{c}" for c in fresh],
                "customer_id": fresh,
                "event_type": ["page_view"] * len(fresh),
                "event_time": pa.array([now] * len(fresh), pa.timestamp("us", tz="UTC")),
                "available_at": pa.array([now] * len(fresh), pa.timestamp("us", tz="UTC")),
            }
        )
    )
    seen_ineligible = seen_eligible = 0
    for cid in customers:
        body = service.predict(cid)
        assert set(body["scores"]) == {*model.action_names, "churn_30d", "renew_30d"}
        for name, entry in body["scores"].items():
            # An action without a model in this bundle is answered by the rules, flagged, not calibrated.
            assert entry["fallback"] is (name not in model.actions)
            if entry["fallback"]:
                assert entry["percentile"] is None and entry["segment"] is None
            assert (entry["probability"] is None) == (entry["eligible"] is False)
            if entry["eligible"] is False:  # no score, and the rule that excluded the customer says why
                assert entry["reason"].startswith(("eligibility.", "trigger:", "unknown customer")), entry
            elif entry["fallback"]:  # the fallback says why it answers
                assert f"has no model for {name}" in entry["reason"], entry
            else:
                assert entry.get("reason") is None
            if entry["probability"] is not None:
                assert 0 < entry["probability"] < 1
        assert body["scores"]["buy_7d"]["eligible"] is True
        assert body["fallback"] is True
        churn = body["scores"]["churn_30d"]
        if churn["eligible"] is False:
            seen_ineligible += 1
        else:
            seen_eligible += 1
            assert cid in fresh and churn["eligible"] is True
    assert seen_ineligible and seen_eligible == len(fresh)
    only_model = service.predict(customers[0], list(model.action_names))
    assert only_model["fallback"] is False
    assert only_model["model_version"] == model.version


def test_canary_routes_a_stable_hash_share_to_the_candidate(
    served: tuple[ScoringService, ServingModel], workspace: Workspace
) -> None:
    service, model = served
    candidate = ServingModel(
        f"{model.version}-candidate", model.feature_set_version, list(model.actions.values())
    )
    customers = [f"x{i}" for i in range(4000)] + _customers(workspace)
    try:
        service.set_canary(candidate, 0.2)
        first = {c: service.predict(c, ["buy_7d"])["canary"] for c in customers}
        share = sum(first.values()) / len(first)
        assert 0.17 < share < 0.23
        again = service.predict_many(customers[:1000], ["buy_7d"])
        for r in again["results"]:
            assert r.get("canary", False) == first[r["customer_id"]]
            if r.get("canary"):
                assert r["model_version"] == candidate.version
        one = next(c for c, v in first.items() if v)
        assert service.predict(one)["model_version"] == candidate.version
        service.set_canary(None)
        assert service.predict(one)["canary"] is False
    finally:
        service.set_canary(None)


def test_no_model_at_all_serves_the_declared_actions_by_fallback(
    workspace: Workspace, tmp_path: Path
) -> None:
    rules = ActionRules(workspace.spec.actions)
    store = InMemoryStore([*workspace.spec.features, *rules.features])
    with DuckDBEventLog(workspace.db_path).connection(read_only=True) as con:
        store.rebuild(con)
    service = ScoringService(store, None, rules=rules)
    body = service.predict(_customers(workspace)[0])
    assert body["model_version"] is None and body["fallback"] is True
    assert all(s["fallback"] for s in body["scores"].values())
    assert all(
        s["reason"].startswith(("no model in production", "eligibility.")) for s in body["scores"].values()
    )
    assert yaml.safe_dump(body)  # plain data
