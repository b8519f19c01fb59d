"""The HTTP API's request and response models, declared once: requests are validated with them and the OpenAPI
document (:mod:`propensity.server.openapi`) is generated from them.

Limits are the same everywhere an id is accepted (:data:`MAX_ID_LENGTH`); text fields are strict (``true`` is
not the string ``"true"``), numbers are finite, and a nested value in an event's extra fields is at most
:data:`MAX_DEPTH` levels deep. Field names of one event that differ only in case (``CUSTOMER_ID`` and
``customer_id``) are refused: the event log's columns are case-insensitive, so one would silently win.

Responses are built as plain dicts by the service (one orjson call on the hot path); their models here describe
them for the document, and the schemathesis test checks every answer against it.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from propensity.core.event import CORE_FIELDS, PROPERTY_FIELDS

MAX_ID_LENGTH = 256
MAX_TEXT_LENGTH = 1024
MAX_DEPTH = 32
MAX_CUSTOMERS = 1000
MAX_EVENTS = 10_000

CustomerId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"\S"),
    Field(description=f"A customer id: 1–{MAX_ID_LENGTH} characters, not only spaces."),
]
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT_LENGTH)]
PLATFORM_FIELDS = ("available_at", "ingested_at", "source")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# ----------------------------------------------------------------------------------------------- requests


class PredictQuery(BaseModel):
    """Query of ``GET /v1/predict``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    customer_id: CustomerId
    actions: Annotated[
        str | None,
        Field(description="Comma-separated action names; all when absent.", max_length=MAX_TEXT_LENGTH),
    ] = None
    explain: Annotated[
        bool,
        Field(description="Add the three features that moved each model score most (reason_codes)."),
    ] = False


FeatureValue = Annotated[str, StringConstraints(max_length=MAX_TEXT_LENGTH)] | float | int | bool | None


class PredictBatch(_Strict):
    """Body of ``POST /v1/predict``: ``customer_ids`` (scored from the online store), or ``features`` (one row
    scored as given: the bundle's feature names → values, checked against its feature schema)."""

    customer_ids: Annotated[list[CustomerId] | None, Field(min_length=1, max_length=MAX_CUSTOMERS)] = None
    features: Annotated[
        dict[Annotated[str, StringConstraints(min_length=1, max_length=128)], FeatureValue] | None,
        Field(
            description="Feature name → value for one row scored as it is (a labelled table's columns, or the "
            "project's features): numbers for numeric features, text for categories, null for missing. Unknown "
            "or mistyped fields are a 422 naming them.",
            max_length=1000,
        ),
    ] = None
    customer_id: Annotated[
        CustomerId | None, Field(description="With features: the id the answer carries (optional).")
    ] = None
    actions: Annotated[list[Annotated[str, StringConstraints(min_length=1, max_length=128)]] | None,
                       Field(description="Action names; all when absent.")] = None  # fmt: skip

    @model_validator(mode="after")
    def _one_input(self) -> PredictBatch:
        if (self.customer_ids is None) == (self.features is None):
            raise ValueError("send customer_ids (scored from the store) or features (one row), not both")
        return self


def json_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """How deeply ``value`` nests lists and objects (a scalar is 0), counting no further than ``limit + 1``."""
    depth, level = 0, [value]
    while True:
        containers = [v for v in level if isinstance(v, dict | list)]
        if not containers or depth > limit:
            return depth
        depth += 1
        level = [x for c in containers for x in (c.values() if isinstance(c, dict) else c)]


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


class Event(BaseModel):
    """A canonical event sent live. Extra fields (and the keys of ``properties``) are kept in the log's
    ``properties``; ``available_at``, ``ingested_at`` and ``source`` are set by the platform."""

    model_config = ConfigDict(
        extra="allow",
        strict=True,
        frozen=True,
        json_schema_extra={
            "additionalProperties": {"description": f"Kept in properties (≤ {MAX_DEPTH} levels)."}
        },
    )

    event_id: Annotated[
        str | None,
        StringConstraints(min_length=1, max_length=MAX_ID_LENGTH),
        Field(
            description="Optional; a content hash is used when absent. Repeats are accepted as duplicates."
        ),
    ] = None
    customer_id: CustomerId
    event_type: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    event_time: Annotated[
        Annotated[str, StringConstraints(min_length=1, max_length=64)] | float,
        Field(
            description="When it happened: ISO 8601 text (2024-05-01T12:30:00Z; without an offset, in the "
            "project's events.timezone) or epoch seconds (milliseconds from 1e11 up). Years 1–9999."
        ),
    ]
    amount: float | None = None
    quantity: float | None = None
    currency: Text | None = None
    sku: Text | None = None
    category: Text | None = None
    campaign_id: Text | None = None
    channel: Text | None = None
    plan: Text | None = None
    properties: dict[str, Any] | None = None

    @field_validator("amount", "quantity", "event_time")
    @classmethod
    def _finite_numbers(cls, value: Any) -> Any:
        return _finite(value) if isinstance(value, float) else value

    @model_validator(mode="before")
    @classmethod
    def _names(cls, data: Any) -> Any:
        problems = event_name_problems(0, data)
        if problems:
            raise ValueError(f"{problems[0]['field']}: {problems[0]['message']}")
        return data


_KNOWN = frozenset((*CORE_FIELDS, *PROPERTY_FIELDS))


def event_name_problems(index: int, event: Any) -> list[dict[str, Any]]:
    """What is wrong with one event's field names and nesting, as ``{"index", "field", "message"}`` entries:
    fields the platform sets, ``properties`` keys clashing with top-level fields, names that are empty, too
    long or unprintable, names differing only in case (the log's columns are case-insensitive, so one would
    silently win), extra values nested deeper than :data:`MAX_DEPTH` or not finite."""
    if not isinstance(event, dict):
        return []
    problems: list[dict[str, Any]] = []

    def problem(field: str, message: str) -> None:
        problems.append({"index": index, "field": field, "message": message})

    for name in PLATFORM_FIELDS:
        if name in event:
            problem(name, "is set by the platform for live events; leave it out")
    names = [(name, name) for name in event]
    props = event.get("properties")
    if isinstance(props, dict):
        for key in props:
            if key in _KNOWN or key == "properties":
                problem(f"properties.{key}", "clashes with a top-level event field")
            names.append((key, f"properties.{key}"))
    seen: dict[str, str] = {}
    for name, where in names:
        if not 1 <= len(name) <= 128 or not name.isprintable():
            problem(repr(name)[1:-1] or "(empty)", "field names must be 1–128 printable characters")
            continue
        other = seen.setdefault(name.casefold(), name)
        if other != name:
            problem(where, f"fields {other!r} and {name!r} differ only in case; the event log's field names are "
                           "case-insensitive, so send one of them")  # fmt: skip
    for name, value in event.items():
        if name in _KNOWN:
            continue
        limit = MAX_DEPTH + 1 if name == "properties" else MAX_DEPTH
        if isinstance(value, dict | list) and json_depth(value, limit) > limit:
            problem(name, f"nests deeper than {MAX_DEPTH} levels")
        elif isinstance(value, float) and not math.isfinite(value):
            problem(name, "must be a finite number")
    return problems


class EventBatch(_Strict):
    """``{"events": [...]}``: one of the three shapes ``POST /v1/events`` takes (an event, a list, this)."""

    events: Annotated[list[Event], Field(min_length=1, max_length=MAX_EVENTS)]


EventsBody = Event | Annotated[list[Event], Field(min_length=1, max_length=MAX_EVENTS)] | EventBatch


# Checked against the source by the handler (so a bad value is named rows[i].column, not by union member).
AttributeValue = Annotated[
    Any, WithJsonSchema({"type": ["string", "number", "boolean", "null"], "maxLength": 4096})
]
AttributeRow = Annotated[
    dict[Annotated[str, StringConstraints(min_length=1, max_length=128)], AttributeValue],
    Field(max_length=1000),
]


class AttributesBody(_Strict):
    """Body of ``POST /v1/attributes``: rows of one declared attribute source, in its own column names."""

    source: Annotated[
        str | None,
        StringConstraints(min_length=1, max_length=128),
        Field(description="The attribute source (its name in propensity.yaml); optional when there is one."),
    ] = None
    rows: Annotated[
        list[AttributeRow],
        Field(
            min_length=1,
            max_length=10_000,
            description="Column → value, as a file of the source would have them: its customer id column, "
            "optionally its valid_from column (ISO 8601; default: now), and attribute columns (text, numbers, "
            "booleans or null, stored as text). A column the source does not take is a 422 naming it.",
        ),
    ]


class Promote(_Strict):
    """Body of ``POST /v1/models/{version}/promote`` (optional)."""

    force: Annotated[bool, Field(description="Promote even if the gate refuses (needs a reason).")] = False
    reason: Annotated[str | None, StringConstraints(max_length=MAX_TEXT_LENGTH)] = None


class Canary(_Strict):
    """Body of ``POST /v1/models/canary``."""

    share: Annotated[float, Field(ge=0.0, le=1.0, description="Share of customers, 0–1; 0 stops the canary.")]
    model_version: Annotated[
        str | None,
        StringConstraints(min_length=1, max_length=MAX_ID_LENGTH),
        Field(description="A bundle id or prefix; the newest candidate when absent."),
    ] = None


class ModelVersionPath(BaseModel):
    version: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)]


class DocsAsset(BaseModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="A file of the /docs page, e.g. swagger-ui-bundle.js."
    )


# ---------------------------------------------------------------------------------------------- responses


class ReasonCode(BaseModel):
    feature: str
    value: Any = Field(description="The feature's value for this customer.")
    contribution: float = Field(description="Log-odds moved by this feature (path attribution).")
    direction: str = Field(json_schema_extra={"enum": ["up", "down"]})


class Score(BaseModel):
    probability: float | None = Field(
        ge=0,
        le=1,
        description="Calibrated probability of the action in its horizon (the fallback's tier score when "
        "fallback is true); null when the customer is not eligible.",
    )
    percentile: float | None = Field(ge=0, le=100, description="0–100 among the bundle's reference scores.")
    segment: str | None = Field(
        description="The tier of the project's segments: section this score falls in, cut as the latest batch "
        "scoring run of the bundle cut it (so batch and online agree)."
    )
    eligible: bool | None = Field(
        description="Whether the action's eligibility rule holds now (false: no score); null when the rule "
        "is not evaluated here (an action the project no longer declares)."
    )
    fallback: bool = Field(description="The score comes from the rule-based fallback, not a model.")
    reason: str | None = Field(
        default=None,
        description="Why there is no score (the eligibility rule that excluded the customer, naming its key "
        "in propensity.yaml) or why the fallback answers (no model for the action, features missing).",
    )
    reason_codes: list[ReasonCode] | None = Field(
        default=None, description="With explain=true: the 3 features that moved the score most."
    )


class _Meta(BaseModel):
    model_version: str | None = Field(description="The bundle that answered (null: fallback only).")
    feature_set_version: str | None
    scored_at: str = Field(json_schema_extra={"format": "date-time"})
    expiration_at: str = Field(json_schema_extra={"format": "date-time"})
    fallback: bool = Field(description="Some score came from the rule-based fallback.")
    canary: bool = Field(description="Scored by the canary bundle.")
    latency_ms: float = Field(description="Time spent scoring inside the server.")


class Prediction(_Meta):
    customer_id: str
    cold_start: bool = Field(description="Unknown customer: scored on empty features.")
    scores: dict[str, Score]


class BatchResult(BaseModel):
    customer_id: str
    cold_start: bool
    scores: dict[str, Score]
    canary: bool | None = Field(default=None, description="Scored by the canary bundle.")
    model_version: str | None = Field(default=None, description="With canary: the bundle that answered.")


class BatchPrediction(_Meta):
    results: list[BatchResult]
    features_supplied: bool | None = Field(
        default=None, description="With features: true (one result, scored from the supplied row)."
    )
    missing_features: list[str] | None = Field(
        default=None, description="With features: the model's features the row did not give (missing values)."
    )


class EventsAccepted(BaseModel):
    received: int
    accepted: int = Field(description="New events, durable in the event log and applied online.")
    duplicates: int = Field(description="Events whose event_id was already in the log (or the batch).")


class AttributesAccepted(BaseModel):
    source: str = Field(description="The attribute source the rows were written to.")
    rows: int = Field(description="Rows received.")
    versions: int = Field(description="Attribute versions written (one per attribute column of each row), "
                          "durable in the workspace and applied online.")  # fmt: skip


class Status(BaseModel):
    status: str


class Ready(BaseModel):
    status: str
    model_version: str
    scorer: str


class CanaryServed(BaseModel):
    model_version: str
    share: float


class Served(BaseModel):
    model_version: str
    feature_set_version: str
    actions: list[str]
    scorer: str
    canary: CanaryServed | None


class Bundle(BaseModel):
    model_version: str
    stage: str
    created_at: str
    actions: list[str]


class Models(BaseModel):
    serving: Served | None
    bundles: list[Bundle]


class Moved(BaseModel):
    serving: Served | None
    previous: str | None = None
    gate: dict[str, Any] | None = None


class FieldProblem(BaseModel):
    index: int | None = Field(default=None, description="The event's position in the batch.")
    field: str
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = Field(default=None, description="The parameter or field at fault.")
    errors: list[FieldProblem] | None = None


class Error(BaseModel):
    error: ErrorBody
