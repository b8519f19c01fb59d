"""Trainers, calibration, metrics and reason codes on data with a known answer."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from propensity.config.training import LightGBMSettings
from propensity.training.calibration import Calibrator, choose_calibrator
from propensity.training.encoding import FeatureEncoder
from propensity.training.explain import importance, reason_codes
from propensity.training.metrics import deciles, evaluate, expected_calibration_error
from propensity.training.trainers import LightGBMModel, LogisticBaseline


def data(n: int, seed: int) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=n)
    x2 = rng.exponential(size=n)
    noise = rng.normal(size=n)
    plan = rng.choice(["free", "basic", "pro"], size=n)
    z = -2.0 + 1.2 * x1 - 0.8 * x2 + np.where(plan == "pro", 1.0, 0.0)
    p = 1 / (1 + np.exp(-z))
    y = (rng.random(n) < p).astype(float)
    x1_with_nulls = pa.array(np.where(rng.random(n) < 0.05, np.nan, x1), from_pandas=True)
    table = pa.table({"x1": x1_with_nulls, "x2": x2, "noise": noise, "plan": plan})
    return table, y, p


def test_encoder_maps_categories_and_unseen_values_to_nan() -> None:
    t = pa.table({"a": [1.0, None], "b": ["x", "y"], "c": [True, False]})
    enc = FeatureEncoder.fit(t, ["a", "b", "c"])
    m = enc.matrix(pa.table({"a": [2.0], "b": ["zzz"], "c": [True]}))
    assert m[0, 0] == 2.0 and np.isnan(m[0, 1]) and m[0, 2] == 1.0
    assert FeatureEncoder.from_json(enc.to_json()) == enc


def test_ece_and_deciles_by_hand() -> None:
    p = np.array([0.05, 0.05, 0.95, 0.95])
    y = np.array([0, 1, 1, 1])
    assert abs(expected_calibration_error(p, y) - (0.5 * 0.45 + 0.5 * 0.05)) < 1e-12
    d = deciles(np.linspace(0, 1, 100), (np.arange(100) >= 90).astype(float))
    assert d[0]["lift"] == 10.0 and d[0]["cumulative_gain"] == 1.0


def test_calibration_recovers_true_probabilities() -> None:
    rng = np.random.default_rng(0)
    true = rng.uniform(0.01, 0.6, 20_000)
    y = (rng.random(20_000) < true).astype(float)
    raw = np.log(true / (1 - true)) * 2.0 + 0.7  # mis-scaled log-odds
    cal, scores = choose_calibrator(raw, y)
    assert set(scores) == {"identity", "platt", "isotonic"} and cal.method in scores
    assert expected_calibration_error(cal(raw), y) < 0.015
    again = Calibrator.from_json(cal.to_json())
    np.testing.assert_allclose(again(raw), cal(raw))


def test_models_learn_are_deterministic_and_round_trip_through_text() -> None:
    table, y, p_true = data(12_000, 1)
    enc = FeatureEncoder.fit(table, table.column_names)
    x = enc.matrix(table)
    ids = [f"c{i}" for i in range(len(y))]
    settings = LightGBMSettings(max_rounds=200, min_child_samples=50)
    m1 = LightGBMModel.fit(x, y, ids, enc, settings, seed=3)
    m2 = LightGBMModel.fit(x, y, ids, enc, settings, seed=3)
    np.testing.assert_array_equal(m1.raw(x), m2.raw(x))
    np.testing.assert_allclose(LightGBMModel.from_text(m1.to_text()).raw(x), m1.raw(x))
    base = LogisticBaseline.fit(x, y, enc)
    np.testing.assert_allclose(LogisticBaseline.from_json(base.to_json()).raw(x, enc), base.raw(x, enc))
    oracle_auc = evaluate(p_true, y)["roc_auc"]
    for raw in (m1.raw(x), base.raw(x, enc)):
        assert evaluate(1 / (1 + np.exp(-raw)), y)["roc_auc"] > oracle_auc - 0.03


def test_importance_and_reason_codes_point_at_the_drivers() -> None:
    table, y, _ = data(8_000, 2)
    enc = FeatureEncoder.fit(table, table.column_names)
    x = enc.matrix(table)
    model = LightGBMModel.fit(
        x, y, [f"c{i}" for i in range(len(y))], enc, LightGBMSettings(max_rounds=150), seed=0
    )
    imp = importance(model, x, enc.names)
    assert imp[-1]["feature"] == "noise" and {imp[0]["feature"], imp[1]["feature"]} <= {"x1", "x2", "plan"}
    rows = np.array(
        [
            [3.0, 0.1, 0.0, float(enc.categories["plan"].index("pro"))],
            [-3.0, 4.0, 0.0, float(enc.categories["plan"].index("free"))],
        ]
    )
    codes = reason_codes(model, rows, enc.names, top=2)
    assert codes[0][0] == {"feature": "x1", "direction": "+", "contribution": codes[0][0]["contribution"]}
    assert all(c["direction"] == "-" for c in codes[1])
