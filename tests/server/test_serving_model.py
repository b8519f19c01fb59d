"""The serving model's one-row encoding and calibration equal the training code's, and the store protocol holds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pytest

from propensity.config.decisions import SegmentSettings
from propensity.features.offline import parse_features
from propensity.scoring.model import ActionModel, ServingModel, calibrate, percentile_of
from propensity.scoring.segments import reference_segments, segment_of
from propensity.serving.store import InMemoryStore, OnlineStore
from propensity.training.calibration import Calibrator
from propensity.training.encoding import FeatureEncoder


def test_calibrate_equals_the_training_calibrators() -> None:
    rng = np.random.default_rng(0)
    raw = rng.normal(size=4000) * 3
    y = (rng.random(4000) < 1 / (1 + np.exp(-raw))).astype(float)
    probe = np.concatenate([rng.normal(size=2000) * 5, [-50.0, 50.0, -800.0, 800.0, 0.0]])
    for method in ("platt", "isotonic"):
        cal = Calibrator.fit(method, raw, y)  # type: ignore[arg-type]
        with np.errstate(over="ignore"):  # the training calibrator overflows (harmlessly) at ±800
            want = cal(probe)
        got = np.array([calibrate(cal.to_json(), float(r)) for r in probe])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=method)
        knots = np.asarray(cal.params.get("x", []))
        if len(knots):  # exactly on the isotonic knots
            np.testing.assert_allclose(
                [calibrate(cal.to_json(), float(k)) for k in knots], cal(knots), atol=1e-12
            )


def test_row_encoder_equals_the_feature_encoder() -> None:
    table = pa.table(
        {
            "n": pa.array([1.5, None, -2.0, 0.0, 3.0], pa.float64()),
            "i": pa.array([1, 2, None, 4, 5], pa.int64()),
            "b": pa.array([True, False, None, True, False]),
            "c": pa.array(["gold", "silver", None, "bronze", "gold"]),
        }
    )
    encoder = FeatureEncoder.fit(table.slice(0, 3), ["n", "i", "b", "c"])  # "bronze" unseen in training
    text = lgb.train(
        {"objective": "binary", "verbosity": -1, "min_data_in_leaf": 1, "min_data_in_bin": 1},
        lgb.Dataset(np.array([[0.0, 1.0, 0.0, 1.0], [1.0, 0.0, 1.0, 0.0]] * 5), [0, 1] * 5),
        num_boost_round=2,
    ).model_to_string()
    model = ServingModel(
        "m-test", "fs-test",
        [ActionModel("buy_7d", text, encoder.names, {"method": "platt", "a": 1.0, "b": 0.0}, encoder.categories)],
    )  # fmt: skip
    store_order = ["c", "b", "unused", "i", "n"]  # the store's order differs from the model's
    row_encoder = model.encoder_for(store_order)
    want = encoder.matrix(table)
    for r, row in enumerate(table.to_pylist()):
        vector = tuple(row.get(name) for name in store_order)
        np.testing.assert_array_equal(row_encoder.encode(vector), want[r])
    assert model.encoder_for(["n"]).missing == ["i", "b", "c"]


def test_percentiles_and_segments() -> None:
    q = [i / 100 for i in range(101)]
    assert percentile_of(q, 0.5) == 50.0
    assert percentile_of(q, -1) == 0.0 and percentile_of(q, 2) == 100.0
    assert percentile_of(None, 0.3) is None
    # The default section on the test-split quantiles: high from the 80th percentile, medium from the 50th.
    default = reference_segments(q, SegmentSettings())
    assert [segment_of(s, default) for s in (None, 0.1, 0.5, 0.8)] == [None, "low", "medium", "high"]


def test_in_memory_store_honours_the_protocol() -> None:
    store = InMemoryStore(
        parse_features(
            [{"name": "purchases_7d", "aggregate": "count", "event_type": "purchase", "window": "7d"}]
        )
    )
    assert isinstance(store, OnlineStore)
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    events = pa.table(
        {
            "event_id": ["e1", "e2", "e2"],
            "customer_id": ["c1", "c1", "c1"],
            "event_type": ["purchase"] * 3,
            "event_time": pa.array([t0, t0 + timedelta(hours=1), t0 + timedelta(hours=1)], pa.timestamp("us", "UTC")),
            "available_at": pa.array([t0, t0 + timedelta(hours=1)] * 1 + [t0 + timedelta(hours=1)], pa.timestamp("us", "UTC")),
        }
    )  # fmt: skip
    assert store.apply(events) == 2
    assert store.vector("c1", t0 + timedelta(days=1)) == (2,)
    assert store.vector("nobody", t0) == (0,)
    assert store.knows("c1") and not store.knows("nobody")
    # A read before the customer's floor answers at the floor instead of failing.
    assert store.vector("c1", t0 - timedelta(days=1)) == (2,)


@pytest.mark.parametrize("backend", ["native", "numpy"])
def test_batch_and_single_row_probabilities_agree(backend: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 3))
    texts = [
        lgb.train({"objective": "binary", "verbosity": -1}, lgb.Dataset(x, (x[:, k] > 0).astype(int)), 10).model_to_string()
        for k in range(2)
    ]  # fmt: skip
    cal = {"method": "platt", "a": 0.9, "b": -0.1}
    model = ServingModel(
        "m",
        "fs",
        [ActionModel(f"a{k}", t, ["f0", "f1", "f2"], cal) for k, t in enumerate(texts)],
        backend=backend,
    )
    many = model.probabilities_many(x[:50])
    for r in range(50):
        np.testing.assert_allclose(model.probabilities(x[r].tolist()), many[r], rtol=0, atol=1e-15)
    booster = lgb.Booster(model_str=texts[1])
    want = Calibrator("platt", {"a": 0.9, "b": -0.1})(booster.predict(x[:50], raw_score=True))
    np.testing.assert_allclose(many[:, 1], want, atol=1e-12)


def test_actions_with_different_category_vocabularies_share_one_model() -> None:
    """Each action's encoder learns categories from its own training set; serving encodes each action's way."""
    rng = np.random.default_rng(3)
    n = 400
    tables = {
        "buy_7d": pa.table({"x": rng.normal(size=n), "plan": rng.choice(["free", "pro"], n).tolist()}),
        "upgrade_30d": pa.table(
            {"x": rng.normal(size=n), "plan": rng.choice(["basic", "pro", "team"], n).tolist()}
        ),
    }
    actions, encoders, texts = [], {}, {}
    for name, table in tables.items():
        enc = FeatureEncoder.fit(table, ["x", "plan"])
        matrix = enc.matrix(table)
        y = (matrix[:, 1] == 1).astype(float)  # the label is "the plan coded 1", which differs per action
        texts[name] = lgb.train(
            {"objective": "binary", "verbosity": -1, "min_data_in_leaf": 5, "seed": 1},
            lgb.Dataset(matrix, y),
            num_boost_round=5,
        )
        encoders[name] = enc
        actions.append(
            ActionModel(
                name, texts[name].model_to_string(), enc.names, {"method": "identity"}, enc.categories
            )
        )
    model = ServingModel("m-test", "fs-test", actions)
    assert sorted(model.columns) == ["plan", "plan", "x"]
    row_encoder = model.encoder_for(["plan", "x"])
    for plan in ("free", "pro", "basic", "team"):
        vector = (plan, 0.25)
        got = model.probabilities(row_encoder.encode(vector))
        for i, name in enumerate(model.action_names):
            single = pa.table({"x": [0.25], "plan": [plan]})
            want = texts[name].predict(encoders[name].matrix(single))[0]
            assert got[i] == pytest.approx(want, abs=1e-9), (name, plan)


@pytest.mark.parametrize(
    "calibrator",
    [
        {"method": "platt", "a": 1.3, "b": -0.2},
        {"method": "identity"},
        {"method": "isotonic", "x": [-2.0, -0.5, -0.5, 0.1, 1.7], "y": [0.01, 0.2, 0.25, 0.6, 0.97]},
        {"method": "isotonic", "x": [0.5], "y": [0.3]},
    ],
)
def test_batch_calibration_equals_the_single_row_calibration(calibrator: dict[str, Any]) -> None:
    from propensity.scoring.model import calibrate, calibrate_many

    raw = np.concatenate([np.random.default_rng(0).normal(0, 3, 5000), [np.nan, -1e300, 1e300, 0.0, -0.5]])
    many = calibrate_many(calibrator, raw)
    one = np.array([calibrate(calibrator, float(r)) for r in raw])
    assert np.array_equal(np.isnan(many), np.isnan(one))
    ok = ~np.isnan(one)
    assert np.max(np.abs(many[ok] - one[ok])) <= 1e-15
