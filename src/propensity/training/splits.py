"""Train / calibration / test split in time, with gaps so that no label window crosses into the next split.

The latest cutoffs are the test split, the ones before them (at least one label span earlier) the calibration
split, and the rest (again a label span earlier) the training split. A row belongs to the split its ``as_of``
falls in; a row whose label window ends after the next split's first cutoff would leak the future of that
split into this one, so it is marked ``purged`` (``purge: true``, the default): no evaluation stage uses it,
but the production refit on all matured history does. With ``purge: false`` such a spine is refused
(:class:`LeakageError`). :func:`verify_no_overlap` checks the result and runs again before any model is fitted.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from propensity.config.training import SplitSettings
from propensity.core.errors import PropensityError

SPLITS = ("train", "calibration", "test")
PURGED = "purged"  # matured rows whose label window crosses the next split: kept for the refit only


class LeakageError(PropensityError):
    """A label window of an earlier split reaches past the first cutoff of the next split."""


class InsufficientDataError(PropensityError):
    """Too few cutoffs, positives or negatives to train an action; the message says found vs needed."""


@dataclass(frozen=True)
class SplitBoundaries:
    """Rows with ``as_of < calibration_start`` train; ``< test_start`` calibrate; the rest test."""

    calibration_start: datetime
    test_start: datetime

    def to_json(self) -> dict[str, str]:
        return {
            "calibration_start": self.calibration_start.isoformat(),
            "test_start": self.test_start.isoformat(),
        }

    @staticmethod
    def from_json(data: dict[str, str]) -> SplitBoundaries:
        return SplitBoundaries(
            datetime.fromisoformat(data["calibration_start"]), datetime.fromisoformat(data["test_start"])
        )


def choose_boundaries(
    periods: Sequence[datetime], span: timedelta, settings: SplitSettings, *, action: str = "action"
) -> SplitBoundaries:
    """Pick the split boundaries among the cutoffs ``periods`` for labels that take ``span`` to mature."""
    ps = sorted(set(periods))
    n = len(ps)
    n_test = max(1, round(n * settings.test))
    n_cal = max(1, round(n * settings.calibration))
    test_start = ps[n - n_test] if n >= 3 else None
    cal = [p for p in ps if test_start is not None and p + span <= test_start]
    cal_start = cal[-n_cal] if len(cal) >= n_cal else None
    train = [p for p in ps if cal_start is not None and p + span <= cal_start]
    if test_start is None or cal_start is None or not train:
        per = max(1, round(span / (ps[1] - ps[0]))) if n > 1 else 1
        need = n_test + n_cal + 1 + 2 * per
        raise InsufficientDataError(
            f"{action}: found {n} matured cutoff(s) but a time split with gaps of {span} needs about {need} "
            "(test, calibration, training, and a label span between each); use more history, a shorter "
            "training.spine.slide or a shorter horizon"
        )
    return SplitBoundaries(calibration_start=cal_start, test_start=test_start)


def choose_row_boundaries(
    split_time: pa.ChunkedArray | pa.Array,
    label_end: pa.ChunkedArray | pa.Array,
    settings: SplitSettings,
    *,
    action: str = "action",
) -> SplitBoundaries:
    """Boundaries for rows that each have their own time and label window (trigger actions: sends, whose windows
    may end at a campaign's end), chosen on the rows rather than on a grid.

    The test split is the latest ``settings.test`` share of rows (by split time). The calibration split starts at
    the row time that keeps the most rows once label windows crossing a boundary are purged, balancing the kept
    training and calibration rows against their shares (a long campaign that would straddle a boundary moves
    it rather than being thrown away)."""
    t = np.sort(_micros(split_time))
    end = _micros(label_end)
    when = _micros(split_time)
    n = t.size
    if n < 3:
        raise InsufficientDataError(f"{action}: found {n} matured row(s); a time split needs more")
    times = np.unique(t)
    # test: the latest time with at least the test share of rows at or after it
    at_or_after = n - np.searchsorted(t, times, side="left")
    ok = np.flatnonzero(at_or_after >= max(1, round(settings.test * n)))
    if ok.size == 0 or ok[-1] == 0:
        raise InsufficientDataError(
            f"{action}: all {n} matured row(s) share one time; a time split needs more"
        )
    test_start = times[ok[-1]]
    candidates = times[times < test_start]
    before = when < test_start
    cal_pool = np.sort(when[before & (end <= test_start)])
    kept_cal = cal_pool.size - np.searchsorted(cal_pool, candidates, side="left")
    ends = np.sort(end[before])
    kept_train = np.searchsorted(ends, candidates, side="right")
    w_train = max(1e-9, 1.0 - settings.test - settings.calibration)
    score = np.minimum(kept_train / w_train, kept_cal / settings.calibration)
    best = int(np.argmax(score)) if candidates.size else -1
    if best < 0 or kept_train[best] == 0 or kept_cal[best] == 0:
        raise InsufficientDataError(
            f"{action}: {n} matured row(s) cannot be split in time into training, calibration and test without "
            "label windows crossing from one into the next; use more history or a shorter horizon"
        )
    return SplitBoundaries(calibration_start=_datetime(candidates[best]), test_start=_datetime(test_start))


def _micros(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    arr = values.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.int64)


def _datetime(us: Any) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))


def group_times(table: pa.Table, groups: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """Each row's split time: the earliest ``as_of`` of its group (``groups[i]``; a null group is the row alone).

    Splitting by group time puts every row of a group (a campaign's sends) on one side of each boundary; rows of
    a group whose label window then crosses a boundary are purged like any other."""
    as_of = table.column("as_of")
    key = pc.if_else(pc.is_null(groups), pc.cast(pa.array(range(table.num_rows)), pa.string()), groups)
    key = pc.binary_join_element_wise(pc.if_else(pc.is_null(groups), "row", "group"), key, "\x1f")
    keyed = pa.table({"k": key, "t": as_of})
    first = keyed.group_by("k").aggregate([("t", "min")])
    index = pc.index_in(keyed.column("k"), value_set=first.column("k"))
    return pa.chunked_array([pc.take(first.column("t_min"), index)]).cast(as_of.type)


def assign_splits(
    table: pa.Table,
    boundaries: SplitBoundaries,
    *,
    purge: bool = True,
    action: str = "action",
    split_time: pa.ChunkedArray | pa.Array | None = None,
) -> pa.Table:
    """Add a ``split`` column; mark ``purged`` (``purge``) or refuse rows whose label window crosses the next
    boundary. Purged rows are in no evaluation split; only the refit on all matured rows uses them.

    A row's split is decided by its ``as_of``, or by ``split_time`` when given (see :func:`group_times`)."""
    as_of = table.column("as_of") if split_time is None else split_time
    end = table.column("label_end")
    cal = pa.scalar(boundaries.calibration_start, as_of.type)
    test = pa.scalar(boundaries.test_start, as_of.type)
    in_train = pc.less(as_of, cal)
    in_cal = pc.and_(pc.greater_equal(as_of, cal), pc.less(as_of, test))
    crosses = pc.or_(
        pc.and_(in_train, pc.greater(end, cal)),
        pc.and_(in_cal, pc.greater(end, test)),
    )
    n_cross = pc.sum(crosses).as_py() or 0
    if n_cross and not purge:
        raise LeakageError(
            f"{action}: {n_cross} row(s) have label windows that reach into the next split "
            f"(calibration starts {boundaries.calibration_start.isoformat()}, test starts "
            f"{boundaries.test_start.isoformat()}); remove them from the spine or set training.split.purge: true"
        )
    split = pc.if_else(
        crosses, PURGED, pc.if_else(in_train, "train", pc.if_else(in_cal, "calibration", "test"))
    )
    return table.append_column("split", split.cast(pa.string()))


def verify_no_overlap(table: pa.Table, *, action: str = "action") -> None:
    """Raise :class:`LeakageError` unless each split's label windows end by the next split's first cutoff."""
    bounds = {}
    for name in SPLITS:
        part = table.filter(pc.equal(table.column("split"), name))
        if part.num_rows:
            bounds[name] = (pc.min(part.column("as_of")).as_py(), pc.max(part.column("label_end")).as_py())
    for earlier, later in itertools.pairwise(SPLITS):
        if earlier in bounds and later in bounds and bounds[earlier][1] > bounds[later][0]:
            raise LeakageError(
                f"{action}: a {earlier} label window ends {bounds[earlier][1].isoformat()}, after the {later} "
                f"split's first cutoff {bounds[later][0].isoformat()}; the {later} metrics would not be honest"
            )
    order = [s for s in SPLITS if s in bounds]
    for earlier, later in itertools.pairwise(order):
        if bounds[earlier][0] >= bounds[later][0]:
            raise LeakageError(
                f"{action}: the {earlier} split does not come before the {later} split in time"
            )


def check_class_counts(
    table: pa.Table, *, min_positives: int, min_negatives: int, action: str = "action"
) -> None:
    """Refuse an action whose training split has too few positives or negatives, or a split with no class."""
    for name in SPLITS:
        part = table.filter(pc.equal(table.column("split"), name))
        pos = int(pc.sum(part.column("label")).as_py() or 0)
        neg = part.num_rows - pos
        need_pos = min_positives if name == "train" else max(1, min_positives // 10)
        need_neg = min_negatives if name == "train" else max(1, min_negatives // 10)
        if pos < need_pos or neg < need_neg:
            raise InsufficientDataError(
                f"{action}: too little data to learn: the {name} split has {pos} positive and {neg} negative "
                f"row(s); it needs at least {need_pos} positive and {need_neg} negative (training.min_positives / "
                "training.min_negatives; calibration and test need a tenth of them)"
            )
