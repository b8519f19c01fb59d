"""The linear candidate: piecewise-linear terms that learn a shape, exact single-row arithmetic, JSON round trip."""

from __future__ import annotations

import json

import numpy as np

from propensity.training.linear import AdditiveLogistic, Basis, additive_raw_one


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A bump-shaped effect of x0, a log-shaped one of a count x1 (10% missing), a category x2, noise x3."""
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-3, 3, n)
    x1 = rng.poisson(3, n).astype(float)
    x2 = rng.integers(0, 3, n).astype(float)
    x3 = rng.normal(size=n)
    x1[rng.random(n) < 0.1] = np.nan
    count = np.where(np.isnan(x1), 0.2, np.log1p(np.nan_to_num(x1)))
    z = -1.0 + 1.5 * np.exp(-(x0**2)) + count - np.array([0.0, 0.8, -0.5])[x2.astype(int)]
    p = 1 / (1 + np.exp(-z))
    y = (rng.random(n) < p).astype(float)
    return np.column_stack([x0, x1, x2, x3]), y, p


NAMES = ["bump", "count", "plan", "noise"]
CATS = {"plan": ["a", "b", "c"]}


def test_learns_nonlinear_terms_close_to_the_truth_and_stays_calibrated() -> None:
    x, y, p = data(40_000, 0)
    model = AdditiveLogistic.fit(x, y, NAMES, CATS, penalty=30.0)
    got = 1 / (1 + np.exp(-model.raw(x)))
    assert np.mean(np.abs(got - p)) < 0.015
    assert abs(got.mean() - y.mean()) < 0.005
    bump = next(t for t in model.terms if t.name == "bump")
    at = bump.evaluate(np.array([-3.0, 0.0, 3.0]))
    assert at[1] > at[0] + 1.0 and at[1] > at[2] + 1.0  # the bump is found
    noise = next((t for t in model.terms if t.name == "noise"), None)
    assert noise is None or np.ptp(noise.values) < 0.25


def test_strong_penalty_flattens_terms() -> None:
    x, y, _ = data(5_000, 1)
    weak, strong = AdditiveLogistic.fit_path(x, y, NAMES, CATS, penalties=[10.0, 1e6])
    spread = {t.name: np.ptp(t.values) for t in strong.terms if t.kind == "numeric"}
    assert max(spread.values()) < 0.05 < np.ptp(next(t for t in weak.terms if t.name == "bump").values)


def test_one_row_arithmetic_equals_the_batch_exactly_and_json_round_trips() -> None:
    x, y, _ = data(8_000, 2)
    model = AdditiveLogistic.fit(x, y, NAMES, CATS, penalty=30.0)
    probe = np.vstack(
        [x[:500], [[np.nan, np.nan, np.nan, np.nan]], [[1e9, -1e9, 7.0, 0.0]], [[-5, 0, -1, 0]]]
    )
    batch = model.raw(probe)
    one = np.array([additive_raw_one(r, model.intercept, model.terms) for r in probe])
    assert np.array_equal(batch, one)
    again = AdditiveLogistic.from_json(json.loads(json.dumps(model.to_json())))
    assert np.array_equal(again.raw(probe), batch)
    # An unseen category and a missing one score as missing; values beyond the knots stay flat.
    plan = next(t for t in model.terms if t.name == "plan")
    assert plan.evaluate(np.array([7.0]))[0] == plan.evaluate(np.array([np.nan]))[0] == plan.missing
    bump = next(t for t in model.terms if t.name == "bump")
    assert bump.evaluate(np.array([1e9]))[0] == bump.values[-1]


def test_contributions_add_up_to_the_log_odds() -> None:
    x, y, _ = data(6_000, 3)
    model = AdditiveLogistic.fit(x, y, NAMES, CATS, penalty=30.0)
    c = model.contributions(x[:200], len(NAMES))
    np.testing.assert_allclose(c.sum(axis=1), model.raw(x[:200]), rtol=0, atol=1e-9)
    assert abs(c[:, :4].mean(axis=0)).max() < 0.2  # centred on the average row


def test_a_shared_basis_warm_starts_to_the_same_model() -> None:
    x, y, _ = data(6_000, 4)
    basis = Basis.build(x, NAMES, CATS)
    cold = AdditiveLogistic.fit(x, y, NAMES, CATS, penalty=30.0)
    basis.fit(x[:3000], y[:3000], [100.0])  # an earlier fit leaves a warm start behind
    warm = AdditiveLogistic.fit_path(x, y, NAMES, CATS, penalties=[30.0], basis=basis)[0]
    np.testing.assert_allclose(warm.raw(x), cold.raw(x), rtol=0, atol=2e-3)


def test_the_search_goes_past_the_strongest_penalty_when_that_is_where_validation_is_best() -> None:
    # Features unrelated to the label: every term should be flat, so the strongest penalty validates best and
    # the path must go on beyond the grid's edge; on data with real effects it stops inside the grid.
    import pyarrow as pa

    from propensity.training.candidates import PENALTIES, STRONGER_PENALTIES, search
    from propensity.training.encoding import FeatureEncoder

    def best_penalty(x: np.ndarray, y: np.ndarray) -> tuple[float, list[float]]:
        n = len(y)
        names = [f"f{j}" for j in range(x.shape[1])]
        encoder = FeatureEncoder.fit(pa.table({nm: x[:, j] for j, nm in enumerate(names)}), names)
        as_of = np.repeat(np.arange(10), n // 10).astype("datetime64[D]").astype("datetime64[us]")
        found = search(
            x, y, as_of, as_of, np.array([f"c{i}" for i in range(n)]), encoder, seed=0, kinds=("linear",)
        )
        tried = [t.config["penalty"] for t in found.trials]
        return found.best["linear"].config["penalty"], tried

    rng = np.random.default_rng(3)
    noise = rng.normal(size=(4_000, 6))
    penalty, tried = best_penalty(noise, (rng.random(4_000) < 0.3).astype(float))
    assert penalty > PENALTIES[0] and STRONGER_PENALTIES[0] in tried
    x, y, _ = data(4_000, 1)
    penalty, tried = best_penalty(np.nan_to_num(x), y)
    assert penalty < PENALTIES[0] and not set(STRONGER_PENALTIES) & set(tried)
