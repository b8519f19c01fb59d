"""Splits of trigger rows (campaign sends): chosen on the rows, a campaign never on two sides, nothing leaks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from propensity.config.training import SplitSettings
from propensity.training.splits import (
    InsufficientDataError,
    assign_splits,
    choose_row_boundaries,
    group_times,
    verify_no_overlap,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
TS = pa.timestamp("us", tz="UTC")


def sends(campaigns: list[tuple[int, int, int, int]]) -> pa.Table:
    """(start day, sending days, recipients, duration days) per campaign → one row per send."""
    rows: dict[str, list[object]] = {
        "customer_id": [],
        "as_of": [],
        "label": [],
        "label_end": [],
        "campaign_id": [],
    }
    for c, (start, spread, recipients, duration) in enumerate(campaigns):
        for r in range(recipients):
            at = T0 + timedelta(days=start + (r % (spread + 1)), hours=r % 7)
            rows["customer_id"].append(f"h{r}")
            rows["as_of"].append(at)
            rows["label"].append(int(r % 3 == 0))
            rows["label_end"].append(T0 + timedelta(days=start + duration))
            rows["campaign_id"].append(f"c{c}")
    t = pa.table(rows)
    return t.set_column(1, "as_of", t.column("as_of").cast(TS)).set_column(
        3, "label_end", t.column("label_end").cast(TS)
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 300), st.integers(0, 20), st.integers(1, 30), st.integers(1, 90)),
        min_size=3,
        max_size=25,
    )
)
def test_a_campaign_is_never_split_and_no_label_window_leaks(
    campaigns: list[tuple[int, int, int, int]],
) -> None:
    table = sends([(s, min(sp, d - 1) if d > 1 else 0, n, d) for s, sp, n, d in campaigns])
    split_time = group_times(table, table.column("campaign_id"))
    try:
        b = choose_row_boundaries(split_time, table.column("label_end"), SplitSettings())
    except InsufficientDataError:
        return
    out = assign_splits(table, b, split_time=split_time)
    verify_no_overlap(out)
    sides: dict[str, set[str]] = {}
    for r in out.to_pylist():
        sides.setdefault(r["campaign_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in sides.values()), sides
    for name in ("train", "calibration", "test"):
        assert pc.sum(pc.equal(out.column("split"), name)).as_py(), f"{name} is empty"


def test_boundaries_move_to_keep_a_long_campaign_whole() -> None:
    # c1 runs 60 days from day 30 and is the biggest: a boundary inside its window would purge all of it.
    table = sends([(0, 0, 40, 20), (30, 0, 400, 60), (95, 0, 60, 20), (120, 0, 60, 20), (150, 0, 150, 20)])
    split_time = group_times(table, table.column("campaign_id"))
    b = choose_row_boundaries(split_time, table.column("label_end"), SplitSettings())
    out = assign_splits(table, b, split_time=split_time)
    kept = {(r["campaign_id"], r["split"]) for r in out.to_pylist()}
    assert ("c1", "train") in kept  # kept whole in training rather than purged
    assert (b.calibration_start, b.test_start) == (T0 + timedelta(days=95), T0 + timedelta(days=150))


def test_rows_without_a_group_are_split_on_their_own_time() -> None:
    table = sends([(0, 0, 3, 5), (10, 0, 3, 5)])
    groups = pa.array(["g", None, "g", None, None, "g"])
    assert group_times(table, groups).to_pylist() == [T0, T0 + timedelta(hours=1), T0] + [
        T0 + timedelta(days=10, hours=h) for h in (0, 1)
    ] + [T0]


def test_too_few_rows_or_one_time_is_refused() -> None:
    one = sends([(0, 0, 10, 5)])
    with pytest.raises(InsufficientDataError, match="share one time"):
        choose_row_boundaries(
            group_times(one, one.column("campaign_id")), one.column("label_end"), SplitSettings()
        )
