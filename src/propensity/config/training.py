"""The ``training:`` section of ``propensity.yaml``: spine, splits, minimums, model settings, promotion gate.

Every default is written next to its field; a project with no ``training:`` section trains with these.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from propensity.config.durations import Duration, FiniteDuration


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class SpineSettings(_Strict):
    """Snapshot cutoffs, as in Google's ML Windowing Pipeline: one every ``slide``, aligned to ``align``, from
    ``lookback`` after the first event until the action's label window no longer fits in the data."""

    slide: FiniteDuration = Field(
        default_factory=lambda: Duration.parse("7d"), description="Between cutoffs."
    )
    lookback: FiniteDuration = Field(
        default_factory=lambda: Duration.parse("35d"), description="History needed before the first cutoff."
    )
    align: datetime = Field(
        default=datetime(2024, 1, 1, tzinfo=UTC),
        description="Cutoffs are align + k × slide (a Monday 00:00 UTC).",
    )
    start: datetime | None = Field(
        default=None, description="No cutoff before this (default: data + lookback)."
    )
    end: datetime | None = Field(default=None, description="No cutoff after this.")
    data_end: datetime | None = Field(
        default=None,
        description="Where the data is complete up to; default: the latest event_time in the log.",
    )

    _zones = field_validator("align", "start", "end", "data_end")(_utc)

    @model_validator(mode="after")
    def _positive(self) -> SpineSettings:
        if self.slide.seconds == 0:
            raise ValueError("spine.slide must be longer than 0s, e.g. 7d")
        return self


class SplitSettings(_Strict):
    """Train / calibration / test split in time, by cutoffs (the latest ``test`` share is the test split)."""

    calibration: float = Field(default=0.2, gt=0, lt=0.5)
    test: float = Field(default=0.2, gt=0, lt=0.5)
    purge: bool = Field(
        default=True,
        description="Drop rows whose label window reaches into the next split; false refuses such a spine.",
    )


class LightGBMSettings(_Strict):
    learning_rate: float = Field(default=0.05, gt=0, le=1)
    num_leaves: int = Field(default=31, ge=2)
    min_child_samples: int = Field(default=100, ge=1)
    max_rounds: int = Field(default=1000, ge=1)
    early_stopping_rounds: int = Field(default=50, ge=1)
    validation_fraction: float = Field(
        default=0.15, gt=0, lt=0.5, description="Of train customers, for stopping."
    )
    threads: int = Field(
        default=0, ge=0, description="0: one thread under 200,000 training rows, else every core (at most 8)."
    )


class PromotionSettings(_Strict):
    """A candidate may be at most this much worse than production on any action (same test window)."""

    auc_tolerance: float = Field(default=0.005, ge=0)
    ece_tolerance: float = Field(default=0.01, ge=0)


class TrainingSettings(_Strict):
    spine: SpineSettings = Field(default_factory=SpineSettings)
    split: SplitSettings = Field(default_factory=SplitSettings)
    seed: int = 0
    min_positives: int = Field(default=50, ge=1, description="Refuse an action with fewer positive rows.")
    min_negatives: int = Field(default=50, ge=1, description="Refuse an action with fewer negative rows.")
    max_rows: int | None = Field(
        default=None, ge=1000, description="Sample at most this many rows per action."
    )
    calibration: Literal["auto", "isotonic", "platt"] = "auto"
    lightgbm: LightGBMSettings = Field(default_factory=LightGBMSettings)
    promotion: PromotionSettings = Field(default_factory=PromotionSettings)
