"""Batch scoring on a small trained workspace: the rows a user gets, checked against independent computations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from tests.scoring.conftest import AS_OF

from propensity.config.actions import Action
from propensity.core.contract import ContractError, validate_rows
from propensity.core.holdout import groups_for
from propensity.core.score_row import SCORE_ROW_SCHEMA, UTC_US
from propensity.features.offline import compute_features
from propensity.labels.labels import build_labels
from propensity.registry.registry import Registry
from propensity.scoring import batch as batch_module
from propensity.scoring.batch import (
    BatchResult,
    BatchScoringError,
    eligible_customers,
    score_and_store,
    score_batch,
)
from propensity.scoring.fallback import fallback_scores
from propensity.scoring.model import ServingModel, percentile_of
from propensity.scoring.population import eligibility, known_customers
from propensity.scoring.score_store import ParquetScoreStore, open_score_store
from propensity.scoring.scores import score_record_batch
from propensity.workspace import Workspace


@pytest.fixture(scope="module")
def result(scoring_workspace: Workspace) -> BatchResult:
    return score_batch(scoring_workspace, as_of=AS_OF)


def _action(rows: pa.Table, action: str) -> pa.Table:
    return rows.filter(pc.equal(rows.column("action"), action)).sort_by("customer_id")


def _con(ws: Workspace) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(ws.db_path), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    return con


def test_every_known_customer_gets_one_row_per_action_that_keeps_the_contract(
    scoring_workspace: Workspace, result: BatchResult
) -> None:
    rows, run = result.rows, result.run
    with _con(scoring_workspace) as con:
        known = con.execute(
            """SELECT count(DISTINCT customer_id) FROM (
                   SELECT customer_id FROM events WHERE available_at <= $t AND event_time <= $t
                   UNION ALL SELECT customer_id FROM attributes WHERE valid_from <= $t AND available_at <= $t)""",
            {"t": AS_OF},
        ).fetchall()[0][0]
    actions = ["buy_7d", "churn_30d", "upgrade_30d"]
    assert run.details["actions"] == actions and run.details["customers"] == known
    assert rows.num_rows == run.rows == known * len(actions)
    pairs = set(zip(rows.column("customer_id").to_pylist(), rows.column("action").to_pylist(), strict=True))
    assert len(pairs) == rows.num_rows
    assert rows.schema == SCORE_ROW_SCHEMA
    assert validate_rows(rows) == []
    assert set(rows.column("scoring_run_id").to_pylist()) == {run.run_id}
    assert run.expiration_at - run.scored_at == timedelta(days=1)  # scoring.ttl's default
    assert run.as_of == AS_OF and run.contract_version == "2.0.0"
    assert (
        set(rows.column("as_of").to_pylist()) == {AS_OF}
        and rows.column("trigger_id").null_count == rows.num_rows
    )
    assert run.details["meanings"]["buy_7d"] == "probability of at least one purchase within 7 days of as_of"


def test_eligibility_is_evaluated_as_of_the_run(scoring_workspace: Workspace, result: BatchResult) -> None:
    churn = _action(result.rows, "churn_30d")
    with _con(scoring_workspace) as con:
        active = {
            r[0]
            for r in con.execute(
                """SELECT DISTINCT customer_id FROM events WHERE event_type IN ('page_view', 'product_view',
                   'search', 'cart_add', 'cart_remove', 'checkout', 'purchase', 'coupon_redemption',
                   'campaign_click') AND available_at <= $t AND event_time <= $t
                   AND event_time > $t - INTERVAL 30 DAY""",
                {"t": AS_OF},
            ).fetchall()
        }
    eligible = dict(
        zip(churn.column("customer_id").to_pylist(), churn.column("eligible").to_pylist(), strict=True)
    )
    assert {c for c, e in eligible.items() if e} == active
    assert 0 < len(active) < len(eligible)
    for name in ("score", "segment", "percentile", "reason_codes"):
        nulls = pc.is_null(churn.column(name)).to_pylist()
        assert [not e for e in eligible.values()] == nulls or name in ("percentile", "reason_codes"), name
    assert result.run.details["eligible"]["churn_30d"] == len(active)


@pytest.mark.parametrize("template", ["buy", "churn", "upgrade", "renew"])
def test_point_in_time_eligibility_equals_the_training_rules(
    scoring_workspace: Workspace, template: str
) -> None:
    """The scoring path's eligibility SQL gives exactly the customers build_labels keeps at that cutoff."""
    action = Action.model_validate({"template": template})
    with _con(scoring_workspace) as con:
        for as_of in (AS_OF, AS_OF - timedelta(days=45, hours=7), AS_OF - timedelta(days=100)):
            rows = build_labels(con, action, [as_of], slide=timedelta(days=1), align=as_of,
                                data_end=as_of + timedelta(days=400))  # fmt: skip
            expected = set(rows.column("customer_id").to_pylist())
            assert set(eligible_customers(con, action, as_of).to_pylist()) == expected, (template, as_of)
            assert expected or template == "renew"


def test_one_eligibility_query_equals_each_actions_own_rules(scoring_workspace: Workspace) -> None:
    """The batch path's eligibility (every cutoff action in one query over the log) gives, per action, exactly the
    customers of that action's own rules (themselves equal to build_labels', above), triggered actions too."""
    actions = {
        t: Action.model_validate({"template": t}) for t in ("buy", "churn", "upgrade", "renew", "respond")
    }
    with _con(scoring_workspace) as con:
        for as_of in (AS_OF, AS_OF - timedelta(days=45, hours=7)):
            known = known_customers(con, as_of)
            ids = pa.concat_arrays(
                [known, pa.array(["nobody"], pa.string())]
            )  # unknown: eligible for nothing
            masks = eligibility(con, ids, actions, as_of)
            given = eligibility(con, known, actions, as_of, known=True)  # the known customers passed in
            assert all(np.array_equal(given[t], masks[t][:-1]) for t in actions)
            assert list(masks) == list(actions)
            for t, action in actions.items():
                expected = set(eligible_customers(con, action, as_of).to_pylist())
                assert set(ids.filter(pa.array(masks[t])).to_pylist()) == expected, (t, as_of)
            assert sum(int(m.sum()) for m in masks.values()) > 0


def test_batch_scores_equal_the_single_row_path_bit_for_bit(
    scoring_workspace: Workspace, result: BatchResult
) -> None:
    """Every model score of the run is, to the last bit, what serving's single-row path gives for the same
    features; and the threaded record-batch scorer Spark executors run gives the same bits again."""
    registry = Registry(scoring_workspace)
    model = ServingModel.from_bundle_dir(registry.path(registry.resolve("production")))
    for action in model.action_names:
        rows = _action(result.rows, action).filter(pc.field("eligible"))
        spine = pa.table(
            {"customer_id": rows.column("customer_id"), "as_of": pa.array([AS_OF] * rows.num_rows, UTC_US)}
        )
        with _con(scoring_workspace) as con:
            feats = compute_features(con, scoring_workspace.spec.features, spine)
        i = model.action_names.index(action)
        encoder = model.encoder_for(feats.column_names)
        names = feats.column_names
        single = [
            model.probabilities(encoder.encode([feats.column(c)[k].as_py() for c in names]))[i]
            for k in range(feats.num_rows)
        ]
        assert rows.column("score").to_pylist() == single, action
        batch = score_record_batch(model, feats.combine_chunks().to_batches()[0], threads=2)
        assert batch.column(action).to_pylist() == single, action


def test_model_scores_equal_the_training_paths_predictions(
    scoring_workspace: Workspace, result: BatchResult
) -> None:
    buy = _action(result.rows, "buy_7d").filter(pc.field("eligible"))
    bundle = Registry(scoring_workspace).load("production")
    spine = pa.table(
        {"customer_id": buy.column("customer_id"), "as_of": pa.array([AS_OF] * buy.num_rows, UTC_US)}
    )
    with _con(scoring_workspace) as con:
        feats = compute_features(con, scoring_workspace.spec.features, spine)
    expected = bundle.predict("buy_7d", feats)
    np.testing.assert_allclose(buy.column("score").to_numpy(), expected, rtol=0, atol=1e-9)
    assert set(buy.column("fallback").to_pylist()) == {False}
    assert set(buy.column("model_id").to_pylist()) == {f"{bundle.id}/buy_7d"}
    assert result.run.model_version == bundle.id


def test_percentiles_and_reason_codes_match_serving(
    scoring_workspace: Workspace, result: BatchResult
) -> None:
    registry = Registry(scoring_workspace)
    model = ServingModel.from_bundle_dir(registry.path(registry.resolve("production")))
    buy = _action(result.rows, "buy_7d").filter(pc.field("decision_policy") == "ev_max").slice(0, 25)
    assert buy.num_rows > 5
    quantiles = model.actions["buy_7d"].score_quantiles
    i = model.action_names.index("buy_7d")
    spine = pa.table(
        {"customer_id": buy.column("customer_id"), "as_of": pa.array([AS_OF] * buy.num_rows, UTC_US)}
    )
    with _con(scoring_workspace) as con:
        feats = compute_features(con, scoring_workspace.spec.features, spine)
    encoder = model.encoder_for(feats.column_names)
    for k, row in enumerate(buy.to_pylist()):
        assert row["percentile"] == pytest.approx(percentile_of(quantiles, row["score"]), abs=1e-9)
        vector = [feats.column(c)[k].as_py() for c in feats.column_names]
        served = model.reason_codes(encoder.encode(vector), [i])[0]
        codes = json.loads(row["reason_codes"])
        assert [c["feature"] for c in codes] == [c["feature"] for c in served]
        assert [c["contribution"] for c in codes] == pytest.approx(
            [c["contribution"] for c in served], abs=1e-6
        )
        assert all(c["value"] == feats.column(c["feature"])[k].as_py() for c in codes)


def test_reason_codes_go_on_the_rows_that_are_activated_or_every_eligible_row(
    scoring_workspace: Workspace, result: BatchResult
) -> None:
    buy = _action(result.rows, "buy_7d")
    has_codes = pc.is_valid(buy.column("reason_codes")).to_pylist()
    assert has_codes == [p == "ev_max" for p in buy.column("decision_policy").to_pylist()]
    scoring = scoring_workspace.spec.scoring.model_copy(
        update={"reason_codes_for": "eligible", "reason_codes": 2}
    )
    ws = Workspace(scoring_workspace.root, scoring_workspace.spec.model_copy(update={"scoring": scoring}))
    every = _action(score_batch(ws, as_of=AS_OF, actions=["buy_7d"]).rows, "buy_7d")
    assert pc.is_valid(every.column("reason_codes")).to_pylist() == every.column("eligible").to_pylist()
    assert max(len(json.loads(c)) for c in every.column("reason_codes").drop_null().to_pylist()) == 2
    off = Workspace(
        ws.root, ws.spec.model_copy(update={"scoring": scoring.model_copy(update={"reason_codes": 0})})
    )
    assert (
        score_batch(off, as_of=AS_OF, actions=["buy_7d"]).rows.column("reason_codes").null_count
        == every.num_rows
    )


def test_actions_without_a_model_use_the_fallback_and_say_so(
    scoring_workspace: Workspace, result: BatchResult
) -> None:
    assert "upgrade_30d" in result.run.details["fallback_actions"]
    up = _action(result.rows, "upgrade_30d")
    assert set(up.column("fallback").to_pylist()) == {True}
    assert set(up.column("model_id").to_pylist()) == {"fallback/recency-frequency"}
    ok = up.filter(pc.field("eligible"))
    assert ok.num_rows > 0
    spine = pa.table(
        {"customer_id": ok.column("customer_id"), "as_of": pa.array([AS_OF] * ok.num_rows, UTC_US)}
    )
    with _con(scoring_workspace) as con:
        expected = fallback_scores(con, scoring_workspace.spec.action("upgrade_30d"), spine)
    assert ok.column("score").to_pylist() == expected.column("score").to_pylist()


def test_segments_come_from_the_run_and_are_stored_with_it(result: BatchResult) -> None:
    buy = _action(result.rows, "buy_7d").filter(pc.field("eligible"))
    cuts = result.run.segment_cuts["buy_7d"]
    names = result.run.segment_names["buy_7d"]
    assert names == ("low", "medium", "high") and len(cuts) == 2
    for score, segment in zip(
        buy.column("score").to_pylist(), buy.column("segment").to_pylist(), strict=True
    ):
        assert segment == names[int(np.searchsorted(cuts, score, side="right"))]
    high = pc.sum(pc.equal(buy.column("segment"), "high")).as_py()
    assert 0 < high < buy.num_rows


def test_holdout_groups_come_from_the_experiments_section(
    scoring_workspace: Workspace, result: BatchResult
) -> None:
    for action in result.run.details["actions"]:
        rows = _action(result.rows, action)
        ids = rows.column("customer_id").to_pylist()
        assert rows.column("holdout_group").to_pylist() == groups_for(
            scoring_workspace.spec.experiments.holdout_for(action), ids
        )
    assert 0 < result.rows.column("holdout_group").to_pylist().count("control") < result.rows.num_rows / 4


def test_decisions_follow_the_policy(result: BatchResult) -> None:
    rows = result.rows.to_pylist()
    by_customer: dict[str, list[dict[str, object]]] = {}
    for r in rows:
        by_customer.setdefault(str(r["customer_id"]), []).append(r)
    policy = {"buy_7d": (40.0, 0.5), "churn_30d": (20.0, 1.0), "upgrade_30d": (1.0, 0.0)}
    seen = set()
    for cid, mine in by_customer.items():
        nbas = {r["next_best_action"] for r in mine}
        assert len(nbas) == 1, cid  # one next best action per customer, on every row
        nba = nbas.pop()
        if any(r["holdout_group"] == "control" for r in mine):
            assert nba is None and {r["decision_policy"] for r in mine} == {"holdout_control"}
            seen.add("control")
            continue
        if cid in ("c1", "c2"):
            assert nba is None
            assert {r["decision_policy"] for r in mine if r["eligible"]} == {"suppressed:vip_list"}
            seen.add("vip")
            continue
        for r in mine:
            consent = json.loads(str(r["consent"])) if r["consent"] else {}
            if r["action"] == "buy_7d" and r["eligible"] and not consent.get("email", False):
                assert r["decision_policy"] == "no_consent:email"
                seen.add("consent")
            if not r["eligible"]:
                assert r["decision_policy"] == "not_eligible"
        candidates = [r for r in mine if r["decision_policy"] in ("ev_max", "ev_lower")]
        if candidates:
            ev = {r["action"]: float(r["score"]) * policy[str(r["action"])][0] - policy[str(r["action"])][1]  # type: ignore[arg-type]
                  for r in candidates}  # fmt: skip
            assert nba == max(sorted(ev), key=lambda a: ev[a])
            assert [r["action"] for r in candidates if r["decision_policy"] == "ev_max"] == [nba]
            seen.add("ev")
        else:
            assert nba is None
    assert seen == {"control", "vip", "consent", "ev"}


def test_runs_are_stored_and_never_overwritten(scoring_workspace: Workspace, tmp_path: Path) -> None:
    store = ParquetScoreStore(tmp_path / "scores")
    first = score_and_store(scoring_workspace, as_of=AS_OF, store=store)
    second = score_and_store(scoring_workspace, as_of=AS_OF, store=store)
    assert first.run.run_id != second.run.run_id
    assert [r.run_id for r in store.runs()] == [second.run.run_id, first.run.run_id]
    assert (
        store.read_run(first.run.run_id).to_pylist()
        == first.rows.sort_by([("action", "ascending"), ("customer_id", "ascending")]).to_pylist()
    )


def test_the_default_store_is_the_workspace_duckdb_file(scoring_workspace: Workspace) -> None:
    stored = score_and_store(scoring_workspace, as_of=AS_OF, actions=["buy_7d"], customers=["c3", "c4", "c5"])
    store = open_score_store(scoring_workspace)
    assert store.latest_run() == stored.run
    assert store.read_run(stored.run.run_id).column("customer_id").to_pylist() == ["c3", "c4", "c5"]


def test_a_run_that_breaks_the_contract_is_not_written(
    scoring_workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = batch_module.score_batch

    def broken(*args: object, **kwargs: object) -> BatchResult:
        out = real(*args, **kwargs)  # type: ignore[arg-type]
        i = out.rows.column_names.index("score")
        scores = pc.multiply(out.rows.column("score"), 10.0)
        return BatchResult(out.run, out.rows.set_column(i, "score", scores))

    monkeypatch.setattr(batch_module, "score_batch", broken)
    store = ParquetScoreStore(tmp_path / "scores")
    with pytest.raises(ContractError, match=r"score: \d+ value\(s\) outside \[0.0, 1.0\]"):
        score_and_store(scoring_workspace, as_of=AS_OF, actions=["buy_7d"], store=store)
    assert store.runs() == []


def test_as_of_customers_and_actions_restrict_the_run(scoring_workspace: Workspace) -> None:
    early = score_batch(scoring_workspace, as_of=AS_OF - timedelta(days=100), actions=["buy_7d"])
    late = score_batch(scoring_workspace, as_of=AS_OF, actions=["buy_7d"])
    assert 0 < early.run.details["customers"] < late.run.details["customers"]
    assert set(early.rows.column("action").to_pylist()) == {"buy_7d"}
    some = score_batch(scoring_workspace, as_of=AS_OF, customers=["c7", "c9"], actions=["churn_30d"])
    assert some.rows.column("customer_id").to_pylist() == ["c7", "c9"]
    with pytest.raises(BatchScoringError, match=r"unknown action.*nope.*buy_7d"):
        score_batch(scoring_workspace, as_of=AS_OF, actions=["nope"])


def test_frequency_cap_counts_earlier_runs(scoring_workspace: Workspace, tmp_path: Path) -> None:
    policies = scoring_workspace.spec.policies.model_copy(
        update={
            "frequency_cap": scoring_workspace.spec.policies.model_validate(
                {"frequency_cap": {"max": 1, "period": "7d"}}
            ).frequency_cap
        }
    )
    ws = Workspace(scoring_workspace.root, scoring_workspace.spec.model_copy(update={"policies": policies}))
    store = ParquetScoreStore(tmp_path / "scores")
    first = score_and_store(ws, actions=["buy_7d"], as_of=AS_OF, store=store)
    activated = set(
        pc.unique(
            first.rows.filter(pc.is_valid(first.rows.column("next_best_action"))).column("customer_id")
        ).to_pylist()
    )
    assert activated
    second = score_batch(ws, actions=["buy_7d"], as_of=AS_OF, store=store)
    rows = {r["customer_id"]: r for r in second.rows.to_pylist()}
    assert all(
        rows[c]["decision_policy"] == "frequency_cap" and rows[c]["next_best_action"] is None
        for c in activated
    )
    assert not any(r["decision_policy"] == "frequency_cap" for c, r in rows.items() if c not in activated)


def test_no_production_bundle_is_a_clear_error(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path)
    with pytest.raises(BatchScoringError, match="no bundle is in production"):
        score_batch(ws)


@pytest.mark.slow
def test_cli_scores_and_lists_runs(scoring_workspace: Workspace) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    cli = [sys.executable, "-m", "propensity"]
    root = str(scoring_workspace.root)
    out = subprocess.run([*cli, "score", "-w", root, "--as-of", AS_OF.isoformat(), "-a", "buy_7d"],
                         capture_output=True, text=True, env=env)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "stored run r-" in out.stdout and "buy_7d" in out.stdout and "high" in out.stdout
    runs = subprocess.run([*cli, "score-runs", "-w", root], capture_output=True, text=True, env=env)
    assert runs.returncode == 0 and open_score_store(scoring_workspace).runs()[0].run_id in runs.stdout
    bad = subprocess.run([*cli, "score", "-w", root, "-a", "nope"], capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and "unknown action" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_a_bundle_needing_features_the_project_dropped_falls_back_for_every_action(
    scoring_workspace: Workspace, tmp_path: Path
) -> None:
    import shutil

    import yaml

    root = tmp_path / "ws"
    shutil.copytree(scoring_workspace.root, root, ignore=shutil.ignore_patterns("write.lock"))
    spec = yaml.safe_load((root / "propensity.yaml").read_text())
    production = Registry(scoring_workspace).production()
    assert production is not None
    used = ServingModel.from_bundle_dir(Registry(scoring_workspace).path(production)).columns
    dropped = next(f["name"] for f in spec["features"] if f["name"] in used and f.get("kind") != "attribute")
    spec["features"] = [f for f in spec["features"] if f["name"] != dropped]
    (root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    stale = score_batch(Workspace.open(root), as_of=AS_OF)
    assert stale.run.details["missing_features"] == [dropped]
    assert set(stale.run.details["fallback_actions"]) == set(stale.run.details["actions"])
    assert set(stale.rows.column("fallback").to_pylist()) == {True}
    assert set(stale.rows.column("model_id").to_pylist()) == {"fallback/recency-frequency"}
    # Ranks, not calibrated probabilities: no percentile against the model's reference scores.
    assert set(stale.rows.column("percentile").to_pylist()) == {None}
