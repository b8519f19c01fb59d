"""The ``training:`` section of ``propensity.yaml``: spine, splits, minimums, model settings, promotion gate.

Every default is written next to its field; a project with no ``training:`` section trains with these.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from propensity.config.calendar import LocalDateTime, Slide, SlideType
from propensity.config.durations import Duration, FiniteDuration
from propensity.config.predicates import field_kind


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DEFAULT_ALIGN = "2024-01-01T00:00:00"  # a Monday, midnight in the project's time zone


class SpineSettings(_Strict):
    """Snapshot cutoffs, as in Google's ML Windowing Pipeline: one every ``slide``, aligned to ``align``, from
    ``lookback`` after the first event until the action's label window no longer fits in the data; or the
    explicit ``cutoffs`` list. Times without an offset are in the project's ``timezone``."""

    slide: SlideType = Field(
        default_factory=lambda: Slide.parse("7d"),
        description="Between cutoffs: a duration (7d) or calendar months (1mo: the same day each month).",
    )
    lookback: FiniteDuration = Field(
        default_factory=lambda: Duration.parse("35d"), description="History needed before the first cutoff."
    )
    align: LocalDateTime = Field(
        default=datetime(2024, 1, 1, tzinfo=UTC),  # replaced by DEFAULT_ALIGN read in the project's zone
        description="Cutoffs are align + k × slide (default 2024-01-01 00:00, a Monday, in the project's zone).",
    )
    start: LocalDateTime | None = Field(
        default=None, description="No cutoff before this (default: data + lookback)."
    )
    end: LocalDateTime | None = Field(default=None, description="No cutoff after this.")
    data_end: LocalDateTime | None = Field(
        default=None,
        description="Where the data is complete up to; default: the latest event_time in the log.",
    )
    cutoffs: list[LocalDateTime] | None = Field(
        default=None,
        description="Explicit cutoffs instead of the grid (start/end still bound them); e.g. [2017-06-01, 2017-09-01].",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_align(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("align") is None:
            data = {**data, "align": DEFAULT_ALIGN}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> SpineSettings:
        if self.cutoffs is not None:
            if not self.cutoffs:
                raise ValueError("cutoffs: give at least one time, or leave cutoffs out for the slide's grid")
            if len(set(self.cutoffs)) != len(self.cutoffs):
                raise ValueError("cutoffs: each time may appear once")
        return self


class SplitSettings(_Strict):
    """Train / calibration / test split in time, by cutoffs (the latest ``test`` share is the test split)."""

    calibration: float = Field(
        default=0.2,
        gt=0,
        lt=0.5,
        description="Share of the cutoffs (before the test split) the calibration split takes.",
    )
    test: float = Field(
        default=0.2, gt=0, lt=0.5, description="Share of the latest cutoffs held out as the test split."
    )
    purge: bool = Field(
        default=True,
        description="Drop rows whose label window reaches into the next split; false refuses such a spine.",
    )
    group_by: str | None = Field(
        default="campaign_id",
        description="Trigger actions: rows sharing this trigger field (a campaign) go to one split, the one "
        "of the group's first row; null splits row by row.",
    )

    @field_validator("group_by")
    @classmethod
    def _known_field(cls, value: str | None) -> str | None:
        if value is not None:
            field_kind(value)  # raises, naming the fields there are
        return value


class LightGBMSettings(_Strict):
    """LightGBM candidate. By default a small search (sized to the data) picks leaves, leaf size, L2 and the
    learning rate; ``search: false`` uses the one configuration given here. Rounds always by early stopping."""

    search: bool = Field(default=True, description="Search a few configurations on time-ordered validation.")
    learning_rate: float = Field(default=0.05, gt=0, le=1, description="With search: false.")
    num_leaves: int = Field(default=31, ge=2, description="With search: false.")
    min_child_samples: int = Field(default=100, ge=1, description="With search: false.")
    max_rounds: int = Field(
        default=2000, ge=1, description="Most boosting rounds (early stopping usually ends sooner)."
    )
    early_stopping_rounds: int = Field(
        default=50, ge=1, description="Stop after this many rounds without improvement on validation."
    )
    validation_fraction: float = Field(
        default=0.15, gt=0, lt=0.5, description="Of train customers, for stopping."
    )
    threads: int = Field(
        default=0, ge=0, description="0: one thread under 200,000 training rows, else every core (at most 8)."
    )


CandidateKind = Literal["linear", "lightgbm", "blend"]
_ALL_KINDS: tuple[CandidateKind, ...] = ("linear", "lightgbm", "blend")


class ModelSettings(_Strict):
    """Which candidates compete for each action, and the backtest of the refit procedure."""

    candidates: list[CandidateKind] = Field(
        default_factory=lambda: list(_ALL_KINDS),
        description="Competing kinds; the lowest calibrated log loss on the calibration split is served.",
    )
    backtest_folds: int = Field(
        default=3, ge=1, le=12, description="Rolling origins of the backtest (the last is the test split)."
    )

    @field_validator("candidates")
    @classmethod
    def _some(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("models.candidates needs at least one of linear, lightgbm, blend")
        return list(dict.fromkeys(v))


class PromotionSettings(_Strict):
    """A candidate may be at most this much worse than production on any action (same test window)."""

    auc_tolerance: float = Field(
        default=0.005,
        ge=0,
        description="A candidate may have at most this much lower ROC-AUC than production on any action.",
    )
    ece_tolerance: float = Field(
        default=0.01,
        ge=0,
        description="A candidate may have at most this much higher calibration error (ECE) than production on any action.",
    )


class TrainingSettings(_Strict):
    spine: SpineSettings = Field(default_factory=SpineSettings)
    split: SplitSettings = Field(default_factory=SplitSettings)
    seed: int = Field(
        default=0,
        description="Seed of every random choice in training (sampling, LightGBM), for reproducible bundles.",
    )
    min_positives: int = Field(default=50, ge=1, description="Refuse an action with fewer positive rows.")
    min_negatives: int = Field(default=50, ge=1, description="Refuse an action with fewer negative rows.")
    max_rows: int | None = Field(
        default=None, ge=1000, description="Sample at most this many rows per action."
    )
    calibration: Literal["auto", "isotonic", "platt", "none"] = Field(
        default="auto", description="auto: the lowest cross-fitted log loss among none, platt and isotonic."
    )
    models: ModelSettings = Field(default_factory=ModelSettings)
    lightgbm: LightGBMSettings = Field(
        default_factory=LightGBMSettings, description="The LightGBM candidate's search or fixed settings."
    )
    promotion: PromotionSettings = Field(default_factory=PromotionSettings)
