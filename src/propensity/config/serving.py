"""The ``serving`` section of propensity.yaml: where the online state lives, how long a score is valid, canary.

>>> ServingSettings.model_validate({"online_store": "redis://127.0.0.1:6379/0", "canary": {"share": 0.05}}).canary.share
0.05
"""

from __future__ import annotations

from pydantic import Field, field_validator

from propensity.config.base import StrictModel
from propensity.config.durations import Duration, FiniteDuration


class CanarySettings(StrictModel):
    """Route ``share`` of customers (a deterministic hash of the customer id) to a candidate bundle."""

    # A bundle id or unique prefix; None means the newest candidate newer than production.
    bundle: str | None = None
    share: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="Share (0 to 1) of customers scored by the canary bundle; 0 turns the canary off.",
    )


class ServingSettings(StrictModel):
    # "memory" (in-process, rebuilt from the event log at start) or a Redis URL (redis://host:port/db), which
    # several server processes share.
    online_store: str = "memory"
    # Key prefix in Redis, so several projects can share one server.
    redis_prefix: str = Field(default="propensity", min_length=1)
    # Seconds a Redis command may take; with its one retry, a request fails (503) within twice this while
    # Redis is away.
    redis_timeout: float = Field(default=1.0, gt=0.0, le=60.0)
    # How long a served score is valid (its expiration_at − scored_at).
    score_ttl: FiniteDuration = Field(default_factory=lambda: Duration.parse("15m"))
    canary: CanarySettings = Field(default_factory=CanarySettings)

    @field_validator("online_store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if value != "memory" and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"{value!r}: use 'memory' or a Redis URL such as redis://127.0.0.1:6379/0")
        return value
