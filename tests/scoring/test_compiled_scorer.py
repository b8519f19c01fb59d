"""The compiled scorer equals LightGBM's own prediction, natively and in numpy, on awkward inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest

from propensity.scoring import _native
from propensity.scoring.compiled import CompiledScorer, ModelFormatError, parse_model

ROWS = 3000
BACKENDS = ["native", "numpy"]


@pytest.fixture(autouse=True, scope="module")
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    mp = pytest.MonkeyPatch()
    mp.setenv("PROPENSITY_CACHE_DIR", str(tmp_path_factory.mktemp("pf-cache")))
    yield
    mp.undo()


def _data(seed: int, n: int = ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Numbers with NaNs and exact zeros, plus an integer-coded categorical column (index 3)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6))
    x[:, 3] = rng.integers(0, 40, n)
    x[:, 4] = np.round(rng.exponential(2.0, n))  # many exact zeros and repeated values
    x[rng.random(n) < 0.15, 0] = np.nan
    x[rng.random(n) < 0.3, 2] = 0.0
    x[rng.random(n) < 0.05, 3] = np.nan
    logit = x[:, 1] + np.isin(x[:, 3], [2, 5, 7, 11, 30]) - 0.3 * x[:, 4] + np.nan_to_num(x[:, 0])
    y = (logit + rng.normal(size=n) > 0.3).astype(float)
    return x, y


def _probe(model_text: str, x: np.ndarray, seed: int) -> np.ndarray:
    """Rows placed on every split threshold (and one ulp either side), NaNs, tiny values and odd categories."""
    rng = np.random.default_rng(seed)
    parsed = parse_model(model_text)
    rows = [x]
    for tree in parsed.trees:
        num = (tree.decision_type & 1) == 0
        for f, t in zip(tree.split_feature[num], tree.threshold[num], strict=True):
            block = x[rng.integers(0, len(x), 3)].copy()
            block[0, f] = t
            block[1, f] = np.nextafter(t, np.inf)
            block[2, f] = np.nextafter(t, -np.inf)
            rows.append(block)
    odd = x[rng.integers(0, len(x), 400)].copy()
    odd[::2, 3] = rng.choice([-1.0, -0.5, 2.5, 1e12, np.inf, -np.inf, 39.9, 64.0, 1000.0], size=len(odd[::2]))
    odd[1::3, 2] = rng.choice(
        [1e-40, -1e-40, 0.0, -0.0, 1e-35, 1.0000000180025095e-35, -1.0000000180025095e-35],
        size=len(odd[1::3]),
    )
    odd[::5, :] = np.nan
    odd[1::7, 0] = np.inf
    rows.append(odd)
    return np.concatenate(rows)


def _train(params: dict[str, Any], seed: int, rounds: int = 40, categorical: bool = True) -> str:
    x, y = _data(seed)
    if params.get("objective") == "regression":
        y = y + x[:, 1]
    base = {"objective": "binary", "verbosity": -1, "num_leaves": 15, "seed": seed, "deterministic": True,
            "num_threads": 1, "min_data_per_group": 5, "cat_smooth": 1.0}  # fmt: skip
    ds = lgb.Dataset(x, y, categorical_feature=[3] if categorical else "auto", free_raw_data=False)
    booster = lgb.train({**base, **params}, ds, num_boost_round=rounds)
    return str(booster.model_to_string())


MODELS = {
    "binary": ({}, True),
    "binary_numeric_only": ({"num_leaves": 31}, False),
    "zero_as_missing": ({"zero_as_missing": True}, True),
    "no_missing": ({"use_missing": False}, True),
    "sigmoid_scale": ({"sigmoid": 0.7}, True),
    "regression": ({"objective": "regression"}, True),
    "random_forest": ({"boosting": "rf", "bagging_fraction": 0.7, "bagging_freq": 1}, True),
    "stumps_and_single_leaves": ({"num_leaves": 2, "min_data_in_leaf": 1400}, True),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request: pytest.FixtureRequest) -> tuple[str, str]:
    params, categorical = MODELS[request.param]
    return request.param, _train(params, seed=len(request.param), categorical=categorical)


@pytest.mark.parametrize("backend", BACKENDS)
def test_equals_lightgbm_on_thousands_of_rows(model: tuple[str, str], backend: str) -> None:
    name, text = model
    booster = lgb.Booster(model_str=text)
    x = _probe(text, _data(seed=99)[0], seed=1)
    assert len(x) >= 3000
    scorer = CompiledScorer.from_texts([text], backend=backend)  # type: ignore[arg-type]
    assert scorer.backend == backend
    want_raw = booster.predict(x, raw_score=True)
    if name == "random_forest":  # LightGBM's raw_score skips the averaging its probabilities apply
        want_raw = want_raw / booster.num_trees()
    want = booster.predict(x)
    np.testing.assert_allclose(scorer.raw(x)[:, 0], want_raw, rtol=0, atol=1e-9, err_msg=name)
    np.testing.assert_allclose(scorer.predict(x)[:, 0], want, rtol=0, atol=1e-9, err_msg=name)
    # The single-row path agrees with the batch path.
    for i in range(0, len(x), 97):
        assert scorer.predict_one(x[i])[0] == pytest.approx(want[i], abs=1e-9)
        assert scorer.predict_one(x[i].tolist())[0] == pytest.approx(want[i], abs=1e-9)


def test_contributions_add_up_to_the_raw_score(model: tuple[str, str]) -> None:
    name, text = model
    scorer = CompiledScorer.from_texts([text])
    x = _probe(text, _data(seed=98, n=200)[0], seed=2)
    raw = scorer.raw(x)[:, 0]
    for i in range(0, len(x), max(1, len(x) // 60)):
        contrib = scorer.contributions_one(x[i])
        assert contrib.shape == (1, 7)
        assert contrib.sum() == pytest.approx(raw[i], abs=1e-9), name


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_contributions_equal_the_single_row_ones(model: tuple[str, str], backend: str) -> None:
    name, text = model
    scorer = CompiledScorer.from_texts([text], backend=backend)  # type: ignore[arg-type]
    x = _probe(text, _data(seed=97, n=300)[0], seed=3)
    many = scorer.contributions(x, 0)
    assert many.shape == (len(x), scorer.n_columns)
    for i in range(len(x)):
        one = scorer.contributions_one(x[i])[0, :-1]
        np.testing.assert_allclose(many[i], one, rtol=0, atol=1e-9, err_msg=name)
    big = np.tile(x, (10, 1))  # enough rows for three threads: the same numbers, to the bit
    assert np.array_equal(scorer.contributions(big, 0, threads=3), np.tile(many, (10, 1))), name


def test_categorical_and_missing_models_really_use_those_features(model: tuple[str, str]) -> None:
    """Guards the comparison above against models that never exercise the tricky branches."""
    name, text = model
    parsed = parse_model(text)
    kinds = np.concatenate([t.decision_type for t in parsed.trees if len(t.decision_type)])
    if name in ("binary", "zero_as_missing", "sigmoid_scale"):
        assert ((kinds & 1) == 1).any(), "expected categorical splits"
    if name == "zero_as_missing":
        assert (((kinds >> 2) & 3) == 1).any(), "expected zero-as-missing splits"
    if name == "binary_numeric_only":
        assert (((kinds >> 2) & 3) == 2).any(), "expected NaN-missing splits"
    if name == "stumps_and_single_leaves":
        assert any(t.num_leaves == 1 for t in parsed.trees) or all(t.num_leaves <= 2 for t in parsed.trees)


def test_many_models_over_one_shared_vector_with_column_maps() -> None:
    """Five models packed together, each reading its own columns from a wider vector, equal each alone."""
    texts = [_train({"num_leaves": 7 + 4 * k}, seed=k, rounds=25 + 5 * k) for k in range(5)]
    x, _ = _data(seed=7, n=2000)
    rng = np.random.default_rng(0)
    width = 32
    order = rng.permutation(width)
    columns = [order[6 * m : 6 * m + 6].tolist() for m in range(len(texts))]  # disjoint, shuffled
    wide = rng.normal(size=(len(x), width))
    for cols in columns:
        wide[:, cols] = x  # every model sees the same values, at its own positions
    together = CompiledScorer.from_texts(texts, columns, n_columns=width)
    raw = together.raw(wide)
    for m, text in enumerate(texts):
        want = lgb.Booster(model_str=text).predict(x, raw_score=True)
        np.testing.assert_allclose(raw[:, m], want, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(together.raw(wide, threads=2), raw)
    one = together.raw_one(wide[5].tolist())
    np.testing.assert_allclose(one, raw[5], rtol=0, atol=0)


_NO_COMPILER = """
import json, logging, sys
import numpy as np, lightgbm as lgb
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
from propensity.scoring import _native
from propensity.scoring.compiled import CompiledScorer
assert _native.compiler() is None, "a compiler is on the PATH"
text, bundle = sys.argv[1], sys.argv[2]
scorer = CompiledScorer.from_texts([open(text).read()], cache_dir=bundle)
x = np.random.default_rng(0).normal(size=(300, 6))
x[::7, 1] = np.nan
want = lgb.Booster(model_str=open(text).read()).predict(x, raw_score=True)
print(json.dumps({"backend": scorer.backend, "equal": bool(np.array_equal(scorer.raw(x)[:, 0], want)),
                  "one": bool(scorer.raw_one(x[3].tolist())[0] == want[3])}))
"""


def _without_compiler(text: str, bundle: Path, tmp_path: Path) -> tuple[dict[str, object], str]:
    """Score in a fresh interpreter whose PATH holds no C compiler (nothing but an empty folder)."""
    model = tmp_path / "model.txt"
    model.write_text(text)
    empty = tmp_path / "empty-bin"
    empty.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "CC"} | {"PATH": str(empty)}
    proc = subprocess.run(
        [sys.executable, "-c", _NO_COMPILER, str(model), str(bundle)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def test_numpy_fallback_with_a_warning_when_no_compiler(tmp_path: Path) -> None:
    """No C compiler and nothing compiled yet: the numpy evaluator, the same numbers, and a warning saying why."""
    text = _train({}, seed=3, rounds=5)
    result, log = _without_compiler(text, tmp_path / "bundle-a" / "compiled", tmp_path)
    assert result == {"backend": "numpy", "equal": True, "one": True}
    assert "no C compiler found" in log and "numpy" in log


def test_native_is_refused_clearly_when_it_cannot_be_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_native, "compiler", lambda: None)
    with pytest.raises(RuntimeError, match="not available"):
        CompiledScorer.from_texts([_train({}, seed=7, rounds=2)], backend="native")


def test_a_bundle_compiled_where_a_compiler_was_loads_where_none_is(tmp_path: Path) -> None:
    """Compiled at promotion on a machine with a compiler, served by one without: the cached library is used."""
    text = _train({}, seed=5, rounds=4)
    bundle = tmp_path / "bundle" / "compiled"
    CompiledScorer.from_texts([text], backend="native", cache_dir=bundle)
    assert len(list(bundle.glob("pf-*.so"))) == 1
    result, _ = _without_compiler(text, bundle, tmp_path)
    assert result == {"backend": "native", "equal": True, "one": True}


def test_compiled_models_are_cached_beside_the_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROPENSITY_CACHE_DIR", str(tmp_path / "user-cache"))
    text = _train({}, seed=4, rounds=3)
    bundle = tmp_path / "bundle" / "compiled"
    CompiledScorer.from_texts([text], backend="native", cache_dir=bundle)
    libs = list(bundle.glob("pf-*.so"))
    assert len(libs) == 1
    assert not list((tmp_path / "user-cache").rglob("pf-*.so"))  # nothing compiled elsewhere
    mtime = libs[0].stat().st_mtime_ns
    _native._loaded.clear()  # as a new process would: found on disk, not rebuilt
    CompiledScorer.from_texts([text], backend="native", cache_dir=bundle)
    assert libs[0].stat().st_mtime_ns == mtime


def test_an_unwritable_bundle_compiles_into_the_user_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROPENSITY_CACHE_DIR", str(tmp_path / "user-cache"))
    blocked = tmp_path / "bundle"
    blocked.write_text("a file where the folder would be: nothing can be written beneath it")
    scorer = CompiledScorer.from_texts([_train({}, seed=6, rounds=3)], cache_dir=blocked / "compiled")
    assert scorer.backend == "native"
    assert len(list((tmp_path / "user-cache" / "scorer").glob("pf-*.so"))) == 1


def test_bad_models_and_inputs_are_refused_clearly() -> None:
    text = _train({}, seed=5, rounds=3)
    with pytest.raises(ModelFormatError, match="truncated"):
        parse_model(text.split("end of trees")[0])
    with pytest.raises(ModelFormatError, match="not a LightGBM text model"):
        parse_model("hello")
    x, y = _data(seed=5, n=600)
    multi = lgb.train(
        {"objective": "multiclass", "num_class": 3, "verbosity": -1},
        lgb.Dataset(x, (y + (x[:, 1] > 1)).astype(int)),
        2,
    )
    with pytest.raises(ModelFormatError, match="multi-class"):
        parse_model(multi.model_to_string())
    linear = lgb.train(
        {"objective": "binary", "linear_tree": True, "verbosity": -1}, lgb.Dataset(np.nan_to_num(x), y), 2
    )
    with pytest.raises(ModelFormatError, match="linear tree"):
        parse_model(linear.model_to_string())
    scorer = CompiledScorer.from_texts([text])
    with pytest.raises(ValueError, match="6 columns"):
        scorer.raw(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="features but"):
        CompiledScorer.from_texts([text], [[0, 1, 2]])
    assert scorer.raw(np.zeros((0, 6))).shape == (0, 1)
    for bad_row in ([0.0] * 5, [0.0] * 7):
        with pytest.raises(ValueError, match="expected 6 values"):
            scorer.raw_one(bad_row)


def test_extreme_raw_scores_do_not_overflow() -> None:
    text = _train({"objective": "regression"}, seed=6, rounds=3).replace(
        "objective=regression", "objective=binary"
    )
    scorer = CompiledScorer.from_texts([text])
    scorer._sigmoid[:] = 1e6  # a huge sigmoid scale drives the log-odds to ±inf territory
    x = _data(seed=6, n=50)[0]
    p = np.array([scorer.predict_one(r)[0] for r in x])
    assert ((p >= 0) & (p <= 1)).all()
    np.testing.assert_allclose(scorer.predict(x)[:, 0], p, atol=1e-12)
