"""Random tree structures written in LightGBM's text format, loaded by LightGBM itself as the oracle.

Trained models only contain the decision types that training happened to choose; these cover every combination
(missing type none / zero / NaN × default left or right, categorical bitsets of one or two words, thresholds at
0 and ±kZeroThreshold, single-leaf trees) against every awkward input.
"""

from __future__ import annotations

from collections.abc import Iterator

import lightgbm as lgb
import numpy as np
import pytest

from propensity.scoring.compiled import CompiledScorer

N_FEATURES = 5
CATEGORICAL = (3, 4)
ZERO = 1.0000000180025095e-35
# Thresholds LightGBM can write (inf when a split sends every number one way) and the largest double.
EXTREME = (np.inf, -np.inf, np.finfo(np.float64).max, -np.finfo(np.float64).max)


@pytest.fixture(autouse=True, scope="module")
def _cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    mp = pytest.MonkeyPatch()
    mp.setenv("PROPENSITY_CACHE_DIR", str(tmp_path_factory.mktemp("pf-cache")))
    yield
    mp.undo()


def _tree(rng: np.random.Generator, max_leaves: int = 14) -> str:
    n_target = int(rng.integers(1, max_leaves + 1))
    left: list[int] = []
    right: list[int] = []
    feat: list[int] = []
    thr: list[float] = []
    dtype: list[int] = []
    bounds, words = [0], []
    where: dict[int, tuple[int, int] | None] = {0: None}  # leaf -> (parent node, side)
    n_leaves = 1
    for _ in range(n_target - 1):  # grow leaf-wise, as LightGBM does
        leaf, node, new = int(rng.integers(0, n_leaves)), len(left), n_leaves
        parent = where[leaf]
        if parent is not None:
            (left if parent[1] == 0 else right)[parent[0]] = node
        n_leaves += 1
        left.append(~leaf)
        right.append(~new)
        where[leaf], where[new] = (node, 0), (node, 1)
        f = int(rng.integers(0, N_FEATURES))
        if f in CATEGORICAL and rng.random() < 0.8:
            words.extend(int(w) for w in rng.integers(0, 2**32, int(rng.integers(1, 3)), dtype=np.uint64))
            thr.append(float(len(bounds) - 1))
            bounds.append(len(words))
            dtype.append(1 | (int(rng.integers(0, 2)) << 1) | (int(rng.choice([0, 2])) << 2))
        else:
            thr.append(
                float(rng.choice([0.0, ZERO, -ZERO, rng.normal(), round(float(rng.normal()), 1), *EXTREME]))
            )
            dtype.append((int(rng.integers(0, 2)) << 1) | (int(rng.integers(0, 3)) << 2))
        feat.append(f)
    k = len(feat)
    lines = [f"num_leaves={n_leaves}", f"num_cat={len(bounds) - 1}"]
    if k:
        lines += [
            "split_feature=" + " ".join(map(str, feat)),
            "split_gain=" + " ".join(["1"] * k),
            "threshold=" + " ".join(repr(t) for t in thr),
            "decision_type=" + " ".join(map(str, dtype)),
            "left_child=" + " ".join(map(str, left)),
            "right_child=" + " ".join(map(str, right)),
        ]
    values = rng.normal(size=n_leaves) * 0.3
    lines += ["leaf_value=" + " ".join(repr(float(v)) for v in values), "leaf_weight=" + " ".join(["1"] * n_leaves),
              "leaf_count=" + " ".join(["1"] * n_leaves)]  # fmt: skip
    if k:
        lines += ["internal_value=" + " ".join(["0"] * k), "internal_weight=" + " ".join(["1"] * k),
                  "internal_count=" + " ".join(["2"] * k)]  # fmt: skip
    if len(bounds) > 1:
        lines += [
            "cat_boundaries=" + " ".join(map(str, bounds)),
            "cat_threshold=" + " ".join(map(str, words)),
        ]
    return "\n".join([*lines, "is_linear=0", "shrinkage=1"])


def _model(seed: int, trees: int = 25) -> str:
    rng = np.random.default_rng(seed)
    header = ["tree", "version=v4", "num_class=1", "num_tree_per_iteration=1", "label_index=0",
              f"max_feature_idx={N_FEATURES - 1}", "objective=binary sigmoid:1",
              "feature_names=" + " ".join(f"f{i}" for i in range(N_FEATURES)),
              "feature_infos=" + " ".join(["[-3:3]"] * N_FEATURES), ""]  # fmt: skip
    if seed % 4 == 3:
        header.insert(-1, "average_output")  # a random forest: the sum divided by the number of trees
    body = "".join(f"Tree={i}\n{_tree(rng)}\n\n" for i in range(trees))
    return (
        "\n".join(header)
        + "\n"
        + body
        + "end of trees\n\nparameters:\nend of parameters\n\npandas_categorical:null\n"
    )


def _inputs(seed: int, n: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES))
    specials = np.array(
        [np.nan, 0.0, -0.0, 1e-40, -1e-40, ZERO, -ZERO, np.inf, -np.inf, 0.1, -0.1, *EXTREME[2:]]
    )
    mask = rng.random(x.shape) < 0.35
    x[mask] = rng.choice(specials, size=int(mask.sum()))
    for c in CATEGORICAL:
        cats = rng.choice(np.array([*range(70), -1, -0.5, 0.5, 2.7, 63.9, 1e12, np.nan]), size=n)
        x[:, c] = np.where(rng.random(n) < 0.8, cats, x[:, c])
    return x


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("backend", ["native", "numpy"])
def test_random_structures_equal_lightgbm(seed: int, backend: str) -> None:
    text = _model(seed)
    booster = lgb.Booster(model_str=text)
    x = _inputs(seed + 100)
    scorer = CompiledScorer.from_texts([text], backend=backend)  # type: ignore[arg-type]
    want = booster.predict(x, raw_score=True)
    if seed % 4 == 3:  # averaged: the raw score is the mean, as LightGBM's prediction converts it
        want = want / booster.num_trees()
    np.testing.assert_array_equal(scorer.raw(x)[:, 0], want)
    np.testing.assert_array_equal(scorer.raw(x, threads=2)[:, 0], want)
    np.testing.assert_array_equal([scorer.raw_one(row)[0] for row in x[:300].tolist()], want[:300])
    np.testing.assert_allclose(scorer.predict(x)[:, 0], booster.predict(x), rtol=0, atol=1e-12)
