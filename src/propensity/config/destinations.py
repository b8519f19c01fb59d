"""The ``destinations`` and ``gates`` sections of propensity.yaml.

A destination is one of four types, told apart by its ``type`` key; every one has a unique ``name`` (used in the
CLI, in idempotency keys and in the delivery ledger)::

    destinations:
      - {name: drop, type: file, format: parquet}
      - name: buyers
        type: audience
        url: https://audiences.example.com/v1/buyers
        action: buy_7d
        segments: [high]
        identifiers: {email: email, phone: phone}
        consent_attribute: consent_ads

>>> from pydantic import TypeAdapter
>>> spec = TypeAdapter(list[DestinationSpec]).validate_python([{"name": "drop", "type": "file"}])
>>> spec[0].format
'parquet'
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from propensity.config.base import StrictModel

_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_AUDIENCE_BATCH = (
    10_000  # Google Customer Match and Meta Custom Audiences both cap a request at 10,000 ids
)


class _Destination(StrictModel):
    name: str = Field(
        description="The destination's name: lowercase letters, digits, '_' and '-' (CLI, idempotency keys, ledger)."
    )
    # Only these actions' rows go out; all actions when absent.
    actions: list[str] | None = None
    # Send decisions to this destination as customers are rescored on ingest (webhook and profile only).
    realtime: bool = False
    # Only the customers this named target (targets:) selects: its action's eligible, treated rows at or above
    # its threshold (or in its top share). Set by the console's targeting page, or by hand.
    target: str | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"{value!r} is not a valid destination name; use lowercase letters, digits, '_' and '-', "
                "starting with a letter"
            )
        return value


class _HttpDestination(_Destination):
    url: str = Field(description="The endpoint, http:// or https://.")
    # Name of an environment variable holding a bearer token (never the token itself: the spec is committed).
    token_env: str | None = None
    timeout_s: float = Field(default=10.0, gt=0, description="Seconds per request.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an HTTP URL; use http://host/path or https://host/path")
        return value

    @field_validator("token_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV.match(value):
            raise ValueError(f"{value!r} is not an environment variable name (e.g. CRM_TOKEN)")
        return value


class FileDestination(_Destination):
    """A file drop: the run's rows as CSV, Parquet or JSON lines, plus a ``manifest.json`` written last."""

    type: Literal["file"] = "file"
    format: Literal["csv", "parquet", "jsonl"] = Field(
        default="parquet", description="File format of the drop."
    )
    # Folder for the drops, relative to the workspace; each run goes to <path>/<name>/<run_id>/.
    path: str = "exports"

    @model_validator(mode="after")
    def _not_realtime(self) -> FileDestination:
        if self.realtime:
            raise ValueError("realtime: a file drop is written per scoring run; use a webhook or profile")
        return self


class IdentifierColumns(StrictModel):
    """Which customer attributes hold the identifiers to hash (attribute names from an ``attributes`` source)."""

    email: str | None = Field(
        default="email", description="The attribute holding the e-mail address (none: not sent)."
    )
    phone: str | None = Field(
        default="phone", description="The attribute holding the phone number (none: not sent)."
    )


class AudienceDestination(_HttpDestination):
    """An ad audience: SHA-256 hashes of normalised identifiers of the selected, consenting customers."""

    type: Literal["audience"] = "audience"
    # The audience is the customers whose row for ``action`` is eligible and in ``segments`` (when given) and
    # scored at least ``min_score`` (when given).
    action: str
    segments: list[str] | None = Field(
        default=None,
        description="Only customers in these segments of `action` join the audience (all segments when absent).",
    )
    min_score: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Only customers scored at least this join the audience."
    )
    # mirror: customers who leave the audience are removed; upsert: never remove (except withdrawn consent).
    mode: Literal["mirror", "upsert"] = "mirror"
    identifiers: IdentifierColumns = Field(default_factory=IdentifierColumns)
    # A customer is in only when this attribute is true (true/yes/1/y); absent means not consented.
    consent_attribute: str | None = None
    # ... and, when the row's consent JSON names this channel, only when it is true there too.
    consent_channel: str | None = "ads"
    # Country calling code for phone numbers written without one (digits only, e.g. "1", "44", "33").
    default_country_code: str = "1"
    batch_size: int = Field(
        default=MAX_AUDIENCE_BATCH,
        ge=1,
        le=MAX_AUDIENCE_BATCH,
        description="Hashed identifiers per request (at most 10,000, the ad platforms' limit).",
    )

    @field_validator("default_country_code")
    @classmethod
    def _digits(cls, value: str) -> str:
        code = value.lstrip("+")
        if not code.isdigit() or not 1 <= len(code) <= 3:
            raise ValueError(f"{value!r} is not a country calling code; use 1 to 3 digits such as 1, 44, 33")
        return code

    @model_validator(mode="after")
    def _identifiers_and_batch(self) -> AudienceDestination:
        if self.identifiers.email is None and self.identifiers.phone is None:
            raise ValueError("identifiers: name at least one of email or phone")
        if self.realtime:
            raise ValueError("realtime: audiences are synced per scoring run; use a webhook or profile")
        return self


class WebhookDestination(_HttpDestination):
    """Changed decisions POSTed to a backend one record at a time, through the outbox (delivery.py)."""

    type: Literal["webhook"] = "webhook"
    # Attempts per record over its whole life before it goes to the dead-letter file.
    max_attempts: int = Field(default=8, ge=1)
    # Attempts per record within one sync; the rest wait for the next sync (a receiver that is down for a while).
    attempts_per_sync: int = Field(default=3, ge=1)
    base_delay_s: float = Field(
        default=0.5, ge=0.0, description="First retry delay; it doubles per attempt (with jitter)."
    )
    max_delay_s: float = Field(default=30.0, ge=0.0, description="Longest delay between retries.")
    concurrency: int = Field(default=4, ge=1, le=64, description="Requests in flight at once.")


class ProfileDestination(_Destination):
    """A Redis hash per customer for in-session tools, expiring with the scores."""

    type: Literal["profile"] = "profile"
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="The Redis server holding the profiles (redis://host:port/db).",
    )
    # Keys are <prefix>:<customer_id>.
    prefix: str = "propensity:profile"

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"{value!r} is not a Redis URL; use redis://host:port/db")
        return value


_TYPES = ("file", "audience", "webhook", "profile")


def _destination_type(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    # The tag carries a '-' so that error paths show the user's keys only (destinations[0].url).
    return f"type-{kind}" if kind in _TYPES else None


DestinationSpec = Annotated[
    Annotated[FileDestination, Tag("type-file")]
    | Annotated[AudienceDestination, Tag("type-audience")]
    | Annotated[WebhookDestination, Tag("type-webhook")]
    | Annotated[ProfileDestination, Tag("type-profile")],
    Discriminator(
        _destination_type,
        custom_error_type="destination_type",
        custom_error_message=f"needs `type:` set to one of {', '.join(_TYPES)}",
    ),
]
"""One entry of ``destinations:``, told apart by ``type``."""

AnyDestination = FileDestination | AudienceDestination | WebhookDestination | ProfileDestination


class GateSettings(StrictModel):
    """Checks a scoring run must pass before anything is published; a failing check blocks the whole run.

    Thresholds compare against the previous run in the score store where they say so (the first run has
    nothing to compare with, so those checks pass). ``propensity activate --force --reason TEXT`` overrides.
    """

    enabled: bool = Field(
        default=True, description="Run the gates at all (false publishes every run unchecked)."
    )
    # Share of eligible rows whose score or segment is null (a percentile may be null).
    max_null_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # Relative change of the row count against the previous run (0.5: between half and 1.5 times).
    max_row_count_change: float = Field(default=0.5, ge=0.0)
    # Population stability index of each action's scores against the previous run (0.25: a major shift).
    max_psi: float = Field(default=0.25, gt=0.0)
    # A distribution has collapsed when its standard deviation falls below this (e.g. every score the same).
    min_score_std: float = Field(default=0.001, ge=0.0)
    # ... or when one score value holds more than this share of an action's eligible rows.
    max_top_value_share: float = Field(default=0.5, gt=0.0, le=1.0)
    # Actions with fewer eligible rows than this are not checked for collapse or drift (too few to judge).
    min_rows_for_distribution: int = Field(default=50, ge=1)
