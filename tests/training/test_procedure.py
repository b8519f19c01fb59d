"""Evaluate, then refit: the champion's choice, the rows each stage uses, the backtest, determinism.

A hand-made training set (no event log): weekly cutoffs, a 30-day horizon, so a third of the matured rows fall
in the gaps the evaluation purges; the label's log-odds are additive with one bent term, so both candidate kinds
can learn it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from propensity.config.actions import Action
from propensity.config.training import SplitSettings, TrainingSettings
from propensity.training.dataset import TrainingSet
from propensity.training.fit import BLEND_MARGIN, fit_action
from propensity.training.splits import InsufficientDataError, assign_splits, choose_boundaries

T0 = datetime(2025, 1, 6, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")


def training_set(customers: int = 500, weeks: int = 26, seed: int = 0, drift: float = 0.0) -> TrainingSet:
    rng = np.random.default_rng(seed)
    cutoffs = [T0 + timedelta(weeks=w) for w in range(weeks)]
    horizon = timedelta(days=30)
    n = customers * weeks
    cust = np.tile(np.arange(customers), weeks)
    week = np.repeat(np.arange(weeks), customers)
    activity = rng.gamma(2.0, 2.0, n)
    recency = rng.exponential(10.0, n)
    plan = rng.choice(["free", "plus", "pro"], n)
    z = (
        -1.2
        + 0.9 * np.log1p(activity)
        - 0.08 * recency
        + np.where(plan == "pro", 0.7, 0.0)
        + drift * week / weeks
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int8)
    as_of = [cutoffs[w] for w in week]
    table = pa.table(
        {
            "customer_id": pa.array([f"c{c}" for c in cust]),
            "as_of": pa.array(as_of, TS),
            "label": pa.array(y),
            "label_end": pa.array([t + horizon for t in as_of], TS),
            "campaign_id": pa.array([None] * n, pa.string()),
            "activity": activity,
            "recency": recency,
            "plan": plan,
        }
    )
    bounds = choose_boundaries(cutoffs, horizon, SplitSettings())
    table = assign_splits(table, bounds)
    cols = [
        "customer_id",
        "as_of",
        "label",
        "label_end",
        "campaign_id",
        "split",
        "activity",
        "recency",
        "plan",
    ]
    action = Action.model_validate({"template": "churn", "name": "churn_30d"})
    return TrainingSet(action, table.select(cols), bounds, cutoffs, ["activity", "recency", "plan"])


@pytest.fixture(scope="module")
def result():  # type: ignore[no-untyped-def]
    return fit_action(training_set(), TrainingSettings())


def test_the_champion_has_the_lowest_calibrated_log_loss_and_the_baseline_is_no_better(result) -> None:  # type: ignore[no-untyped-def]
    table = {c["candidate"]: c for c in result.candidates}
    champion = table[result.champion["candidate"]]
    assert champion["champion"] and sum(c["champion"] for c in result.candidates) == 1
    loss = champion["calibration_log_loss"]
    # Lowest of all, except that a blend must win by BLEND_MARGIN (it is two models to fit and serve).
    assert all(
        loss <= c["calibration_log_loss"] * (1 + (BLEND_MARGIN if c["kind"] == "blend" else 0)) + 1e-12
        for c in result.candidates
    )
    assert {"linear", "lightgbm", "blend:0.5"} <= set(table)
    assert result.model.kind == champion["kind"] == result.model.model.kind
    reference = result.champion["baseline_calibration_log_loss"]
    assert champion["calibration_log_loss"] <= reference + 1e-4
    assert result.metrics["model"]["log_loss"] <= result.metrics["baseline"]["log_loss"] + 0.003


def test_the_served_model_refits_every_matured_row_and_the_test_fold_is_the_procedure(result) -> None:  # type: ignore[no-untyped-def]
    st = result.stages
    matured = st["matured"]["rows"]
    assert st["served"]["model"]["rows"] == matured == 500 * 26
    assert st["purged"]["rows"] > 0 and st["champion"]["train"]["rows"] < matured / 2
    # The served model saw the newest cutoffs; its calibration window is the newest matured one.
    assert st["served"]["model"]["last_as_of"] == st["evaluation"]["test"]["last_as_of"]
    assert st["served"]["calibration"]["last_as_of"] == st["matured"]["last_as_of"]
    # The test fold fitted on every row matured by the test split's start, purged rows included.
    ev = st["evaluation"]["model"]
    assert ev["rows"] > st["champion"]["train"]["rows"] + st["champion"]["calibration"]["rows"]
    assert ev["last_as_of"] < st["evaluation"]["test"]["first_as_of"]
    assert any("under half" in w for w in result.warnings) and any("purged" in w for w in result.warnings)


def test_the_backtest_has_three_rolling_origins_ending_at_the_test_split(result) -> None:  # type: ignore[no-untyped-def]
    folds = [f for f in result.backtest["folds"] if not f.get("skipped")]
    assert len(folds) == 3 and folds[-1]["test_split"]
    origins = [f["origin"] for f in folds]
    assert origins == sorted(origins)
    for f in folds:
        assert f["model_rows"]["last_as_of"] < f["origin"] <= f["evaluated"]["first_as_of"]
        assert f["model"]["ece"] < 0.05
    assert folds[-1]["model"] == {k: result.metrics["model"][k] for k in folds[-1]["model"]}


def test_training_is_deterministic_given_the_seed(result) -> None:  # type: ignore[no-untyped-def]
    again = fit_action(training_set(), TrainingSettings())
    x = result.encoder.matrix(training_set().table)
    assert np.array_equal(again.model.predict(x, again.encoder), result.model.predict(x, result.encoder))
    assert again.candidates == result.candidates and again.backtest == result.backtest


def test_one_candidate_kind_can_be_forced() -> None:
    settings = TrainingSettings.model_validate({"models": {"candidates": ["linear"], "backtest_folds": 1}})
    r = fit_action(training_set(customers=300, seed=1), settings)
    assert r.model.kind == "linear" and [c["candidate"] for c in r.candidates] == ["linear"]
    assert len(r.backtest["folds"]) == 1 and r.model.model.lightgbm is None


def test_a_thin_training_split_is_not_refused_the_candidates_are_cross_fitted_instead() -> None:
    # 26 weekly cutoffs, 30-day labels: the training split holds about 8 of them. Asking for more positives
    # than it has (but fewer than every matured row has) makes it "thin", as a 90-day action on monthly
    # cutoffs is: one or two cutoffs train.
    ts = training_set(customers=300, seed=2)
    y = ts.table.column("label").to_numpy()
    split = np.asarray(ts.table.column("split").to_pylist())
    need = int(y[split == "train"].sum()) + 1
    assert need < y.sum()
    r = fit_action(ts, TrainingSettings(min_positives=need, models={"backtest_folds": 2}))
    assert r.stages["champion"]["how"].startswith("customer cross-fit")
    assert r.stages["champion"]["fitted_on"]["rows"] > r.stages["champion"]["train"]["rows"]
    assert any("too few to fit candidates on" in w for w in r.warnings)
    assert r.metrics["model"]["ece"] < 0.05
    with pytest.raises(InsufficientDataError, match="the matured rows have"):
        fit_action(ts, TrainingSettings(min_positives=int(y.sum()) + 1))
