"""The compiled scorer serves every kind a bundle may hold (linear, LightGBM, blend) with training's exact scores."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from propensity.scoring.compiled import ModelFormatError, ModelSet, ModelSpec
from propensity.training.encoding import FeatureEncoder
from propensity.training.linear import AdditiveLogistic
from propensity.training.trainers import LightGBMModel, ServedModel, lightgbm_params


@pytest.fixture(scope="module")
def served() -> tuple[dict[str, ServedModel], np.ndarray, FeatureEncoder]:
    rng = np.random.default_rng(0)
    n = 6000
    plan = rng.choice(["free", "basic", "pro"], size=n)
    table = pa.table(
        {
            "x1": pa.array(np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)), from_pandas=True),
            "x2": rng.exponential(size=n),
            "plan": plan,
        }
    )
    enc = FeatureEncoder.fit(table, ["x1", "x2", "plan"])
    x = enc.matrix(table)
    z = 1.2 * np.nan_to_num(x[:, 0]) - 0.8 * np.sqrt(x[:, 1]) + (plan == "pro")
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    lin = AdditiveLogistic.fit(x, y, enc.names, enc.categories, penalty=30.0)
    params = lightgbm_params({"num_leaves": 8, "min_child_samples": 20}, seed=0, rows=n)
    gbm, _, _ = LightGBMModel.train(x, y, enc, params, rounds=40)
    models = {
        "linear": ServedModel("linear", linear=lin),
        "lightgbm": ServedModel("lightgbm", lightgbm=gbm),
        "blend": ServedModel("blend", lin, gbm, {"linear": 0.3, "lightgbm": 0.7}),
    }
    probe = np.vstack([x[:400], [[np.nan, np.nan, np.nan]], [[50.0, -3.0, 9.0]]])
    return models, probe, enc


def _spec(model: ServedModel) -> ModelSpec:
    files = model.files()
    spec = json.loads(files["model.json"])
    return ModelSpec(
        spec["kind"],
        files["model.txt"].decode() if "model.txt" in files else None,
        json.loads(files["linear.json"]) if "linear.json" in files else None,
        spec.get("weights"),
    )


def test_every_kind_scores_exactly_as_in_training_for_batches_and_single_rows(
    served: tuple[dict[str, ServedModel], np.ndarray, FeatureEncoder],
) -> None:
    models, probe, _ = served
    order = ["linear", "lightgbm", "blend"]
    # The three models read their three features from shuffled columns of a wider input (as serving packs
    # several actions' features into one vector).
    cols = [2, 0, 3]
    wide = np.full((len(probe), 5), 123.0)
    wide[:, cols] = probe
    mset = ModelSet([_spec(models[k]) for k in order], [cols] * 3, n_columns=5)
    raw = mset.raw(wide)
    for m, kind in enumerate(order):
        want = models[kind].raw(probe)
        assert np.array_equal(raw[:, m], want), kind
    for i in range(len(wide)):
        assert mset.raw_one(list(wide[i])) == list(raw[i])
    np.testing.assert_array_equal(mset.predict(wide[:5]), 1 / (1 + np.exp(-raw[:5])))


def test_linear_contributions_are_terms_minus_their_means_and_sum_to_the_score(
    served: tuple[dict[str, ServedModel], np.ndarray, FeatureEncoder],
) -> None:
    models, probe, _ = served
    cols = [1, 2, 0]
    wide = probe[:, np.argsort(cols)]
    mset = ModelSet([_spec(models["linear"]), _spec(models["blend"])], [cols, cols], n_columns=3)
    one = mset.contributions_one(wide[7])
    raw = mset.raw_one(list(wide[7]))
    np.testing.assert_allclose(one.sum(axis=1), raw, rtol=0, atol=1e-9)
    batch = mset.contributions(wide[:50], 0)
    want = models["linear"].contributions(probe[:50])[:, :3]
    np.testing.assert_allclose(batch[:, cols], want, rtol=0, atol=1e-12)


def test_a_linear_model_without_its_terms_or_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ModelFormatError, match="no linear part"):
        ModelSet([ModelSpec("linear")], [[0]], n_columns=1)
    with pytest.raises(ModelFormatError, match="unknown kind"):
        ModelSet([ModelSpec("forest", linear={"intercept": 0.0, "terms": []})], [[0]], n_columns=1)
