"""The ``retraining`` section of propensity.yaml: when to retrain, and how a challenger is judged.

>>> s = RetrainSettings.model_validate({"every": "7d", "on_drift_alert": True})
>>> (str(s.every), s.on_drift_alert)
('7d', True)
"""

from __future__ import annotations

from pydantic import Field, model_validator

from propensity.config.base import StrictModel
from propensity.config.durations import FiniteDuration


class RetrainSettings(StrictModel):
    """Triggers (a schedule, a drift alert) and the champion-vs-challenger comparison."""

    every: FiniteDuration | None = Field(
        default=None,
        description="Retrain when the last recorded retrain is at least this old (e.g. 7d); none: no schedule.",
    )
    on_drift_alert: bool = Field(
        default=False, description="Retrain when the latest monitoring run has a monitor at status 'alert'."
    )
    auc_tolerance: float | None = Field(
        default=None,
        ge=0,
        description="How much lower the challenger's ROC-AUC may be; default training.promotion.",
    )
    ece_tolerance: float | None = Field(
        default=None,
        ge=0,
        description="How much higher the challenger's ECE may be; default training.promotion.",
    )
    window: FiniteDuration | None = Field(
        default=None,
        description=(
            "Compare on the matured cutoffs of this last span of the challenger's test split (e.g. 28d); "
            "none: the whole test split."
        ),
    )

    @model_validator(mode="after")
    def _positive(self) -> RetrainSettings:
        for name in ("every", "window"):
            value = getattr(self, name)
            if value is not None and value.seconds == 0:
                raise ValueError(f"retraining.{name} must be longer than 0s, e.g. 7d")
        return self
