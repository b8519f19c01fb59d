"""Train / calibration / test split in time, with gaps so that no label window crosses into the next split.

The latest cutoffs are the test split, the ones before them (at least one label span earlier) the calibration
split, and the rest (again a label span earlier) the training split. A row belongs to the split its ``as_of``
falls in; a row whose label window ends after the next split's first cutoff would leak the future of that
split into this one, so it is dropped (``purge: true``, the default) or the split is refused
(:class:`LeakageError`). :func:`verify_no_overlap` checks the result and runs again before any model is fitted.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from propensity.config.training import SplitSettings
from propensity.core.errors import PropensityError

SPLITS = ("train", "calibration", "test")


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


def assign_splits(
    table: pa.Table, boundaries: SplitBoundaries, *, purge: bool = True, action: str = "action"
) -> pa.Table:
    """Add a ``split`` column; drop (``purge``) or refuse rows whose label window crosses the next boundary."""
    as_of = table.column("as_of")
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
    split = pc.if_else(in_train, "train", pc.if_else(in_cal, "calibration", "test"))
    out = table.append_column("split", split.cast(pa.string()))
    return out.filter(pc.invert(crosses)) if n_cross else out


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
