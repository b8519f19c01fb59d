"""Time splits: no label window of an earlier split reaches into the next; leaky spines and thin data are refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from propensity.config.training import SplitSettings
from propensity.training.splits import (
    InsufficientDataError,
    LeakageError,
    assign_splits,
    check_class_counts,
    choose_boundaries,
    verify_no_overlap,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")


def rows(cutoffs: list[datetime], horizon: timedelta, per: int = 3, label_every: int = 2) -> pa.Table:
    as_of = [c for c in cutoffs for _ in range(per)]
    return pa.table(
        {
            "customer_id": [f"c{i % per}" for i in range(len(as_of))],
            "as_of": pa.array(as_of, TS),
            "label": pa.array([int(i % label_every == 0) for i in range(len(as_of))], pa.int8()),
            "label_end": pa.array([t + horizon for t in as_of], TS),
        }
    )


def bounds(table: pa.Table) -> dict[str, tuple[datetime, datetime]]:
    out = {}
    for s in ("train", "calibration", "test"):
        part = [r for r in table.to_pylist() if r["split"] == s]
        out[s] = (min(r["as_of"] for r in part), max(r["label_end"] for r in part))
    return out


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(min_value=12, max_value=60),
    slide_days=st.sampled_from([1, 3, 7]),
    horizon_days=st.integers(min_value=1, max_value=35),
    test=st.floats(min_value=0.05, max_value=0.45),
    cal=st.floats(min_value=0.05, max_value=0.45),
)
def test_split_has_no_temporal_overlap(
    n: int, slide_days: int, horizon_days: int, test: float, cal: float
) -> None:
    cutoffs = [T0 + timedelta(days=slide_days * i) for i in range(n)]
    horizon = timedelta(days=horizon_days)
    try:
        b = choose_boundaries(cutoffs, horizon, SplitSettings(test=test, calibration=cal))
    except InsufficientDataError:
        return  # too short a history for this horizon: refused, which is also correct
    table = assign_splits(rows(cutoffs, horizon), b)
    got = bounds(table)
    assert got["train"][1] <= got["calibration"][0] <= b.calibration_start
    assert got["calibration"][1] <= got["test"][0] == b.test_start
    verify_no_overlap(table)


def test_a_spine_whose_label_windows_overlap_the_test_period_is_refused() -> None:
    cutoffs = [T0 + timedelta(days=7 * i) for i in range(20)]
    horizon = timedelta(days=30)
    b = choose_boundaries(cutoffs, horizon, SplitSettings())
    # A hand-made spine: the row at the last calibration cutoff has its label window reaching into the test split.
    late = b.test_start - timedelta(days=7)
    spine = rows([*cutoffs, late], horizon)
    with pytest.raises(LeakageError, match="reach into the next split"):
        assign_splits(spine, b, purge=False)
    # And a table whose split column was assigned by hand (e.g. edited on disk) is refused before training.
    leaky = rows(cutoffs, horizon).append_column(
        "split", pa.array(["train"] * 30 + ["calibration"] * 15 + ["test"] * 15)
    )
    with pytest.raises(LeakageError, match="would not be honest"):
        verify_no_overlap(leaky)


def test_purge_marks_exactly_the_rows_that_would_leak() -> None:
    cutoffs = [T0 + timedelta(days=7 * i) for i in range(20)]
    horizon = timedelta(days=30)
    b = choose_boundaries(cutoffs, horizon, SplitSettings())
    table = assign_splits(rows(cutoffs, horizon), b)
    assert table.num_rows == 60  # nothing is lost: the refit on all matured rows uses the purged ones
    kept = {r["as_of"] for r in table.to_pylist() if r["split"] != "purged"}
    dropped = set(cutoffs) - kept
    assert dropped and all(
        (c < b.calibration_start and c + horizon > b.calibration_start)
        or (b.calibration_start <= c < b.test_start and c + horizon > b.test_start)
        for c in dropped
    )


def test_too_short_a_history_is_refused_with_counts() -> None:
    cutoffs = [T0 + timedelta(days=7 * i) for i in range(5)]
    with pytest.raises(InsufficientDataError, match=r"found 5 matured cutoff\(s\)"):
        choose_boundaries(cutoffs, timedelta(days=30), SplitSettings(), action="churn_30d")


def test_too_few_positives_is_refused_with_found_and_needed() -> None:
    cutoffs = [T0 + timedelta(days=7 * i) for i in range(20)]
    b = choose_boundaries(cutoffs, timedelta(days=7), SplitSettings())
    table = assign_splits(rows(cutoffs, timedelta(days=7), per=3, label_every=10), b)
    with pytest.raises(InsufficientDataError) as err:
        check_class_counts(table, min_positives=50, min_negatives=5, action="upgrade_30d")
    msg = str(err.value)
    assert "upgrade_30d" in msg and "needs at least 50 positive" in msg
    n_pos = sum(r["label"] for r in table.to_pylist() if r["split"] == "train")
    assert f"has {n_pos} positive" in msg
