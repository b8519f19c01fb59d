"""The ``monitoring`` and ``alerts`` sections of propensity.yaml.

``monitoring`` says what the monitors look at (how many customers, which reference, how often the server runs
them); ``alerts`` says when a monitor's value is a warning or an alert, and where alerts go. A threshold is keyed
by monitor name (``feature_psi``) or, to override one subject, by ``monitor:subject`` (``feature_psi:spend_30d``,
``freshness_silence:web``).

.. code-block:: yaml

    monitoring:
      interval: 30m
      sample_customers: 20000
    alerts:
      min_status: warning
      thresholds:
        freshness_silence:web: {warning: 1, alert: 3}   # hours
      webhooks:
        - url: https://ops.example.com/hooks/propensity
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator, model_validator

from propensity.config.base import StrictModel
from propensity.config.durations import Duration, FiniteDuration
from propensity.core.clock import as_utc


class Threshold(StrictModel):
    """A monitor's value above ``warning`` is a warning, above ``alert`` an alert (higher is always worse)."""

    warning: float = Field(ge=0, description="The value above which the monitor reports a warning.")
    alert: float = Field(ge=0, description="The value above which the monitor reports an alert.")

    @model_validator(mode="after")
    def _ordered(self) -> Threshold:
        if self.alert < self.warning:
            raise ValueError(f"alert ({self.alert}) must be at least warning ({self.warning})")
        return self


# What each monitor measures and its default thresholds (docs/monitoring.md explains each one).
DEFAULT_THRESHOLDS: dict[str, Threshold] = {
    # PSI of a feature's current distribution against the training reference (0.1 / 0.25: the usual reading).
    "feature_psi": Threshold(warning=0.1, alert=0.25),
    # Two-sample KS statistic for continuous features; small samples raise the effective threshold (see docs).
    "feature_ks": Threshold(warning=0.15, alert=0.3),
    # Increase of a feature's null share (absolute, current minus reference).
    "null_rate": Threshold(warning=0.05, alert=0.2),
    # Increase of a numeric feature's share of zeros (absolute).
    "zero_rate": Threshold(warning=0.1, alert=0.25),
    # PSI of an action's scores against the bundle's calibrated test-score distribution.
    "score_psi": Threshold(warning=0.1, alert=0.25),
    # Hours since a source's last available event.
    "freshness_silence": Threshold(warning=6.0, alert=24.0),
    # 95th percentile of (available_at − event_time) in hours over the last day's events of a source.
    "freshness_lag": Threshold(warning=6.0, alert=24.0),
    # Fold change of a source's last-24h volume against the median of the trailing windows (2 = half or double).
    "volume": Threshold(warning=2.0, alert=4.0),
    # Expected calibration error on the latest matured labels.
    "calibration_ece": Threshold(warning=0.05, alert=0.1),
    # Drop of ROC-AUC on the latest matured labels below the bundle's test AUC.
    "auc_drop": Threshold(warning=0.05, alert=0.1),
    # Drop of the CBPE-estimated AUC (scores alone, no labels needed) below the bundle's test AUC.
    "expected_auc_drop": Threshold(warning=0.05, alert=0.1),
}


class ReferenceSettings(StrictModel):
    """Where the feature reference comes from: the production bundle's latest training cutoffs, or fixed times."""

    at: list[datetime] = Field(
        default_factory=list,
        description="Reference times (UTC); empty: the last `cutoffs` grid cutoffs of the production bundle.",
    )
    cutoffs: int = Field(
        default=4, ge=1, le=52, description="How many of the bundle's latest cutoffs to use."
    )

    @field_validator("at")
    @classmethod
    def _utc(cls, value: list[datetime]) -> list[datetime]:
        return [as_utc(t) for t in value]


class MonitoringSettings(StrictModel):
    """What the monitors look at and how often the server runs them."""

    interval: FiniteDuration = Field(
        default_factory=lambda: Duration.parse("60m"), description="How often the server runs the monitors."
    )
    sample_customers: int = Field(
        default=20_000, ge=100, description="At most this many customers (a seeded hash sample) per snapshot."
    )
    bins: int = Field(default=10, ge=2, le=100, description="Quantile bins of the PSI.")
    reference: ReferenceSettings = Field(default_factory=ReferenceSettings)
    volume_windows: int = Field(
        default=28, ge=3, description="Trailing 24-hour windows the last day's volume is compared with."
    )
    trigger_window: FiniteDuration = Field(
        default_factory=lambda: Duration.parse("28d"),
        description="For triggered actions (campaign responses), the triggers of this window before as_of are "
        "the current scores (long enough to mix trigger kinds the way the bundle's test split did).",
    )
    calibration_periods: int = Field(
        default=8,
        ge=1,
        description="Matured grid cutoffs (most recent first) calibration and AUC are tracked on.",
    )
    min_labelled_rows: int = Field(
        default=50, ge=1, description="A period with fewer labelled rows is shown but does not raise alerts."
    )
    precision_thresholds: dict[str, float] = Field(
        default_factory=dict,
        description="Per action, the score at or above which customers are targeted (default: the top decile).",
    )
    top_share: float = Field(
        default=0.1, gt=0, le=1, description="Targeted share when an action has no precision threshold."
    )


class WebhookSink(StrictModel):
    """An HTTP endpoint that receives each alert as JSON, through the same durable outbox as the activation
    webhook (idempotency key per alert, backoff with jitter, dead letter after ``max_attempts``)."""

    url: str = Field(pattern=r"^https?://", description="Where alerts are POSTed.")
    token_env: str | None = Field(
        default=None, description="Environment variable holding a bearer token (the name, never the token)."
    )
    max_attempts: int = Field(default=8, ge=1, description="Attempts per alert before the dead letter.")
    attempts_per_run: int = Field(
        default=3,
        ge=1,
        description="Attempts per alert within one monitor run; the rest wait for the next run.",
    )
    timeout_s: float = Field(default=10.0, gt=0, description="Per request.")


class AlertSettings(StrictModel):
    """When a monitor's value is a warning or an alert, and where alerts are sent."""

    enabled: bool = Field(default=True, description="Send alerts at all.")
    min_status: Literal["warning", "alert"] = Field(
        default="alert", description="The least severe status that is sent to the sinks."
    )
    log: bool = Field(default=True, description="Write alerts to the `propensity.alerts` logger.")
    webhooks: list[WebhookSink] = Field(default_factory=list)
    resend_after: FiniteDuration = Field(
        default_factory=lambda: Duration.parse("24h"),
        description="A monitor still firing at the same status is sent again only after this long (0s: every run).",
    )
    thresholds: dict[str, Threshold] = Field(
        default_factory=dict, description="Overrides, keyed by monitor or monitor:subject."
    )

    @field_validator("thresholds")
    @classmethod
    def _known_monitors(cls, value: dict[str, Threshold]) -> dict[str, Threshold]:
        for key in value:
            monitor = key.split(":", 1)[0]
            if monitor not in DEFAULT_THRESHOLDS:
                allowed = ", ".join(sorted(DEFAULT_THRESHOLDS))
                raise ValueError(f"unknown monitor {monitor!r} in threshold key {key!r}; allowed: {allowed}")
        return value

    def threshold(self, monitor: str, subject: str) -> Threshold:
        """The threshold for one monitor on one subject: the subject's override, the monitor's, the default."""
        return (
            self.thresholds.get(f"{monitor}:{subject}")
            or self.thresholds.get(monitor)
            or DEFAULT_THRESHOLDS[monitor]
        )
