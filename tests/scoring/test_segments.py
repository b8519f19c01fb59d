"""Segments: tiers cut from a run's own scores, monotone, with stable names, respecting a bimodal valley."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from propensity.config.decisions import SegmentSettings
from propensity.config.errors import SpecError
from propensity.config.spec import parse_spec
from propensity.scoring.segments import (
    Segmentation,
    assign,
    find_segments,
    find_valley,
    reference_segments,
    run_segments,
    segment_of,
    tier_index,
)

scores_strategy = arrays(
    np.float64,
    st.integers(min_value=1, max_value=400),
    elements=st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
)
settings_strategy = st.sampled_from(
    [
        SegmentSettings(),
        SegmentSettings(method="quantile"),
        SegmentSettings(names=["gold", "silver", "bronze", "tin"], quantiles=[0.95, 0.7, 0.3]),
        SegmentSettings(names=["top", "rest"], quantiles=[0.9], min_scores_for_valley=10),
    ]
)


@given(scores_strategy, settings_strategy, st.data())
@settings(max_examples=150, deadline=None)
def test_a_higher_score_never_gets_a_lower_tier(
    scores: np.ndarray, cfg: SegmentSettings, data: st.DataObject
) -> None:
    seg = find_segments(scores, cfg)
    assert list(seg.cuts) == sorted(seg.cuts) and len(seg.cuts) == len(cfg.names) - 1
    probe = np.sort(np.concatenate([scores, data.draw(arrays(np.float64, 20, elements=st.floats(0.0, 1.0)))]))
    tiers = tier_index(probe, seg)
    assert (np.diff(tiers) >= 0).all()
    rank = {n: i for i, n in enumerate(seg.names)}
    assert [rank[n] for n in assign(probe, seg)] == tiers.tolist()


@given(scores_strategy, settings_strategy)
@settings(max_examples=100, deadline=None)
def test_names_are_the_configured_ones_lowest_first(scores: np.ndarray, cfg: SegmentSettings) -> None:
    seg = find_segments(scores, cfg)
    assert seg.names == tuple(reversed(cfg.names))
    assert set(assign(scores, seg)) <= set(cfg.names)
    # The same scores always give the same cuts (nothing random).
    assert find_segments(scores.copy(), cfg) == seg


def test_quantile_tiers_have_the_configured_shares() -> None:
    scores = np.random.default_rng(1).beta(2, 8, size=10_000)
    seg = find_segments(scores, SegmentSettings(method="quantile"))
    names, counts = np.unique(assign(scores, seg), return_counts=True)
    shares = dict(zip(names.tolist(), (counts / scores.size).tolist(), strict=True))
    assert shares == pytest.approx({"high": 0.2, "medium": 0.3, "low": 0.5}, abs=0.002)
    assert seg.method == "quantile"


def test_a_bimodal_histogram_puts_a_cut_in_its_valley() -> None:
    rng = np.random.default_rng(7)
    # 70% of customers around 0.1, 30% around 0.7: the 80th-percentile cut would split the upper mode.
    scores = np.clip(np.concatenate([rng.normal(0.1, 0.03, 7000), rng.normal(0.7, 0.05, 3000)]), 0, 1)
    quantile = find_segments(scores, SegmentSettings(method="quantile"))
    assert 0.6 < quantile.cuts[1] < 0.8  # inside the upper mode
    seg = find_segments(scores, SegmentSettings())
    assert seg.method == "valley" and seg.valley is not None and 0.25 < seg.valley < 0.55
    assert seg.cuts[1] == seg.valley
    tiers = assign(scores, seg)
    # Every customer of the upper mode is high, none of the lower mode is.
    assert set(tiers[scores > 0.5]) == {"high"} and "high" not in set(tiers[scores < 0.25])
    assert seg.to_json()["cuts"] == list(seg.cuts)


def test_unimodal_and_discrete_scores_keep_quantile_cuts() -> None:
    rng = np.random.default_rng(3)
    assert find_valley(rng.beta(2, 5, 5000)) is None
    assert find_valley(rng.normal(0.5, 0.1, 5000)) is None
    tiered = rng.choice([0.012, 0.06, 0.15, 0.3, 0.45], size=2000)  # fallback scores: a handful of values
    assert find_valley(tiered) is None
    assert find_segments(tiered, SegmentSettings()).method == "quantile"


def test_no_scores_no_cuts() -> None:
    seg = find_segments(np.array([]), SegmentSettings())
    assert seg == Segmentation((), ("low", "medium", "high"))
    assert assign(np.array([np.nan, 0.3]), seg).tolist() == [None, "low"]


def test_a_score_on_a_cut_goes_to_the_upper_tier() -> None:
    seg = Segmentation((0.2, 0.5), ("low", "medium", "high"))
    assert assign(np.array([0.19999, 0.2, 0.5, np.nan]), seg).tolist() == ["low", "medium", "high", None]


def test_bad_settings_name_the_key() -> None:
    with pytest.raises(SpecError, match="segments: quantiles: 3 names need 2 quantiles"):
        parse_spec({"segments": {"quantiles": [0.5]}})
    with pytest.raises(SpecError, match="strictly decreasing"):
        parse_spec({"segments": {"quantiles": [0.5, 0.8]}})
    with pytest.raises(SpecError, match="each tier needs its own name"):
        parse_spec({"segments": {"names": ["a", "a"], "quantiles": [0.5]}})


@given(scores_strategy, settings_strategy)
@settings(max_examples=100, deadline=None)
def test_one_score_gets_the_tier_assign_gives_it(scores: np.ndarray, cfg: SegmentSettings) -> None:
    seg = find_segments(scores, cfg)
    assert [segment_of(float(s), seg) for s in scores] == assign(scores, seg).tolist()


def test_reference_segments_cut_at_the_sections_quantiles_of_the_test_scores() -> None:
    q = [i / 100 for i in range(101)]  # a bundle whose test scores are uniform on [0, 1]
    custom = SegmentSettings(names=["gold", "silver", "bronze"], quantiles=[0.9, 0.4])
    seg = reference_segments(q, custom)
    assert seg.cuts == pytest.approx((0.4, 0.9)) and seg.names == ("bronze", "silver", "gold")
    assert [segment_of(s, seg) for s in (0.1, 0.4, 0.89, 0.9, None)] == [
        "bronze",
        "silver",
        "silver",
        "gold",
        None,
    ]


def test_run_segments_leave_out_the_fallback_actions() -> None:
    from datetime import UTC, datetime

    from propensity.scoring.score_store import ScoringRun

    t = datetime(2026, 1, 1, tzinfo=UTC)
    run = ScoringRun("r1", t, t, t, "m-1", "fs-1", 10, segment_cuts={"a": (0.2,), "b": (0.5,)},
                     segment_names={"a": ("low", "high"), "b": ("low", "high")},
                     details={"fallback_actions": ["b"], "segments": {"a": {"method": "valley"}}})  # fmt: skip
    assert run_segments(run) == {"a": Segmentation((0.2,), ("low", "high"), "valley")}
