"""Feature definitions: the ``features:`` section of ``propensity.yaml`` as typed, validated models.

Five kinds, chosen by ``kind:`` (``aggregate`` when absent):

``aggregate``
    A windowed aggregate over one customer's events: ``count``, ``sum``, ``mean``, ``min``, ``max``,
    ``count_distinct``, ``last``, ``time_since_last``, ``time_since_first``; optionally filtered by
    ``event_type`` (one or a list) and a ``where:`` predicate; over a ``window`` (``15m`` … ``90d`` or
    ``lifetime``), cut into ``bucket``\\ s (see :func:`default_bucket`).
``session``
    Features of the current session (``count``, ``duration``, ``count_before``) or the number of
    ``sessions`` in a window; a session ends after ``gap`` (default ``30m``) without events.
``derived``
    Arithmetic over other features (``expr: cart_adds_7d / page_views_7d``); null on division by zero.
``attribute``
    A customer attribute as of the time (``attribute: plan``), from the ``attributes`` table.
``trigger``
    A field of the row's trigger event (``field: properties.campaign_type``): what a campaign send says about
    itself, for triggered actions (respond); null on rows without a trigger.

The field ``event_date`` is the calendar date of an event in the project's time zone (``'YYYY-MM-DD'``):
``aggregate: count_distinct, field: event_date`` counts the days a customer was active.

>>> from pydantic import TypeAdapter
>>> fs = TypeAdapter(list[FeatureDefinition]).validate_python([
...     {"name": "purchases_7d", "aggregate": "count", "event_type": "purchase", "window": "7d"},
...     {"name": "shoe_spend_90d", "aggregate": "sum", "field": "amount", "event_type": "purchase",
...      "where": "category == 'shoes'", "window": "90d"},
... ])
>>> str(fs[1].effective_bucket)
'1d'
>>> feature_set_version(fs)[:3]
'fs-'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Literal, NoReturn

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from propensity.config.calendar import DEFAULT_ZONE, check_zone, context_zone
from propensity.config.durations import Duration, FiniteDuration, WindowDuration
from propensity.config.predicates import (
    EVENT_DATE,
    Expr,
    ExpressionError,
    Predicate,
    field_kind,
    parse_expression,
    parse_predicate,
)
from propensity.core.hashing import content_hash

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_")
RESERVED_NAMES = frozenset({"customer_id", "as_of", "trigger_id"})
EXACT = "exact"

# Bucket sizes a default may pick, smallest first. A finite window's default bucket is the largest of these
# that divides the window into at least MIN_DEFAULT_BUCKETS buckets.
_NICE_BUCKETS = (1, 60, 300, 900, 3600, 6 * 3600, 86400)
MIN_DEFAULT_BUCKETS = 60


def default_bucket(window: Duration) -> Duration | None:
    """The bucket a finite window gets when its definition names none (None for ``lifetime``).

    >>> [str(default_bucket(Duration.parse(w))) for w in ("15m", "1h", "1d", "7d", "30d", "90d")]
    ['1s', '1m', '15m', '1h', '6h', '1d']
    """
    if window.is_lifetime:
        return None
    best = 1
    for size in _NICE_BUCKETS:
        if window.seconds % size == 0 and window.seconds // size >= MIN_DEFAULT_BUCKETS:
            best = size
    return Duration(best)


def _check_feature_name(value: str) -> str:
    if not value or not value[0].isalpha() or not set(value) <= _NAME_CHARS:
        raise ValueError(
            f"{value!r} is not a valid feature name; use lowercase letters, digits and underscores, "
            "starting with a letter"
        )
    if value in RESERVED_NAMES:
        raise ValueError(f"{value!r} is reserved for the spine's column; choose another feature name")
    return value


def _fail(key: str, message: str) -> NoReturn:
    """Raise a validation error located at ``key`` of the model being validated (for model-level checks)."""
    raise ValidationError.from_exception_data(
        "feature",
        [InitErrorDetails(type=PydanticCustomError("value_error", message), loc=(key,), input=None)],
    )


def _event_types(value: Any) -> Any:
    if isinstance(value, str):
        return [value]
    return value


class _Feature(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        description="The feature's name: lowercase letters, digits and underscores (a model input and a column)."
    )
    description: str | None = Field(default=None, description="Free text; not part of the version hash.")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _check_feature_name(value)

    def canonical(self) -> dict[str, Any]:
        """The definition with defaults resolved, as hashed into the feature set version."""
        data = self.model_dump(mode="json", exclude={"description"})
        return data


class _Filtered(_Feature):
    event_type: list[str] | None = Field(
        default=None, description="Only events of this type (or any of these types); all types when absent."
    )
    where: str | None = Field(
        default=None, description="A predicate over event properties, e.g. amount > 50."
    )
    timezone: str | None = Field(
        default=None,
        description="The zone whose calendar dates event_date gives; the project's timezone when absent.",
    )

    @model_validator(mode="after")
    def _project_zone(self, info: ValidationInfo) -> Any:
        # A feature reading event_date keeps the zone it was declared under: its values (and version) depend on it.
        if self.timezone is not None:
            check_zone(self.timezone)
        elif self.uses_event_date:
            return self.model_copy(update={"timezone": context_zone(info)})
        return self

    @property
    def uses_event_date(self) -> bool:
        fields = set() if self.predicate is None else self.predicate.fields()
        field = getattr(self, "field", None)
        return EVENT_DATE in fields or field == EVENT_DATE

    @property
    def zone(self) -> str:
        """The zone of event_date (UTC for a feature validated outside a project)."""
        return self.timezone or DEFAULT_ZONE

    _event_type_list = field_validator("event_type", mode="before")(_event_types)

    @field_validator("event_type")
    @classmethod
    def _non_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("give at least one event type, or leave event_type out for all types")
        return value

    @field_validator("where")
    @classmethod
    def _valid_where(cls, value: str | None) -> str | None:
        if value is not None:
            parse_predicate(value)
        return value

    @property
    def predicate(self) -> Predicate | None:
        return None if self.where is None else parse_predicate(self.where)

    def canonical(self) -> dict[str, Any]:
        data = super().canonical()
        if self.event_type is not None:
            data["event_type"] = sorted(set(self.event_type))
        pred = self.predicate
        data["where"] = None if pred is None else pred.text()
        # Only a feature that reads event_date depends on a zone (and older feature sets keep their version).
        data.pop("timezone", None)
        if self.uses_event_date:
            data["timezone"] = self.zone
        return data


AggregateKind = Literal[
    "count", "sum", "mean", "min", "max", "count_distinct", "last", "time_since_last", "time_since_first"
]
_NEEDS_FIELD = {"sum", "mean", "min", "max", "count_distinct", "last"}
_NUMERIC_ONLY = {"sum", "mean"}


class AggregateFeature(_Filtered):
    """A windowed aggregate of one customer's events (see ``docs/features.md`` for exact semantics)."""

    kind: Literal["aggregate"] = "aggregate"
    aggregate: AggregateKind = Field(
        description="What is computed over the window's events: count, sum, mean, min, max, count_distinct, last, time_since_last, time_since_first."
    )
    field: str | None = Field(default=None, description="The event property aggregated (not for counts).")
    window: WindowDuration = Field(
        description="How far back from the as-of time events count (e.g. 7d), or lifetime."
    )
    bucket: str | None = Field(
        default=None,
        description="Window granularity: a duration dividing the window, or 'exact'; a default by window size.",
    )

    @field_validator("field")
    @classmethod
    def _known_field(cls, value: str | None) -> str | None:
        if value is not None:
            field_kind(value)
        return value

    @field_validator("bucket")
    @classmethod
    def _valid_bucket(cls, value: str | None) -> str | None:
        if value is None or value.strip().lower() == EXACT:
            return None if value is None else EXACT
        d = Duration.parse(value, allow_lifetime=False)
        if d.seconds == 0:
            raise ValueError(f"a bucket must be longer than 0s; use a duration such as 1h, or {EXACT!r}")
        return str(d)

    @model_validator(mode="after")
    def _consistent(self) -> AggregateFeature:
        if self.aggregate in _NEEDS_FIELD and self.field is None:
            _fail("field", f"aggregate {self.aggregate!r} needs a field, e.g. field: amount")
        if self.aggregate not in _NEEDS_FIELD and self.field is not None:
            _fail("field", f"aggregate {self.aggregate!r} takes no field; remove field: {self.field}")
        if self.aggregate in _NUMERIC_ONLY and self.field is not None and field_kind(self.field) != "number":
            _fail("field", f"aggregate {self.aggregate!r} needs a numeric field (amount, quantity)")
        if self.bucket is not None:
            if self.window.is_lifetime:
                _fail("bucket", "a lifetime window has no buckets; remove bucket")
            if self.bucket != EXACT:
                size = Duration.parse(self.bucket).seconds
                if self.window.seconds % size:
                    _fail("bucket", f"{self.bucket} does not divide the window {self.window}")
        elif not self.window.is_lifetime and self.window.seconds == 0:
            _fail("window", "a window must be longer than 0s")
        return self

    @property
    def effective_bucket(self) -> Duration | None:
        """The bucket in force: None for lifetime; ``Duration(0)`` stands for ``exact``."""
        if self.window.is_lifetime:
            return None
        if self.bucket == EXACT:
            return Duration(0)
        if self.bucket is not None:
            return Duration.parse(self.bucket)
        return default_bucket(self.window)

    def canonical(self) -> dict[str, Any]:
        data = super().canonical()
        b = self.effective_bucket
        data["bucket"] = None if b is None else (EXACT if b.seconds == 0 else str(b))
        return data


SessionKind = Literal["count", "duration", "count_before", "sessions"]


class SessionFeature(_Filtered):
    """A feature of the current session, or the number of sessions in a window.

    The current session as of t is the run of session events ending at the latest visible one, walking back
    while consecutive events are at most ``gap`` apart and newer than ``t - lookback``; it is current only if
    ``t - (its last event) <= gap``.
    """

    kind: Literal["session"]
    aggregate: SessionKind = Field(
        description="What is computed of the current session (count, duration, count_before) or `sessions` in a window."
    )
    before: list[str] | None = Field(
        default=None, description="count_before: count events before the first event of these types."
    )
    window: WindowDuration | None = Field(
        default=None, description="sessions: count sessions in this window."
    )
    gap: FiniteDuration = Field(
        default_factory=lambda: Duration.parse("30m"),
        description="Two session events further apart than this start a new session.",
    )
    lookback: FiniteDuration = Field(
        default_factory=lambda: Duration.parse("1d"),
        description="A current session never reaches further back.",
    )
    session_events: list[str] | None = Field(
        default=None, description="Event types that make up sessions; every type when absent."
    )

    _before_list = field_validator("before", "session_events", mode="before")(_event_types)

    @model_validator(mode="after")
    def _consistent(self) -> SessionFeature:
        if self.gap.seconds == 0:
            _fail("gap", "a gap must be longer than 0s")
        if self.lookback.seconds <= self.gap.seconds:
            _fail("lookback", f"{self.lookback} must be longer than the gap {self.gap}")
        if self.aggregate == "sessions":
            if self.window is None or self.window.is_lifetime or self.window.seconds == 0:
                _fail("window", "aggregate 'sessions' needs a finite window, e.g. window: 30d")
            if self.event_type is not None or self.where is not None:
                _fail("aggregate", "aggregate 'sessions' counts sessions; remove event_type and where")
        elif self.window is not None:
            _fail("window", f"aggregate {self.aggregate!r} is about the current session; remove window")
        if self.aggregate == "count_before" and not self.before:
            _fail("before", "aggregate 'count_before' needs before: <event type>, e.g. before: purchase")
        if self.aggregate != "count_before" and self.before is not None:
            _fail("before", f"aggregate {self.aggregate!r} takes no 'before'")
        if self.aggregate == "duration" and (self.event_type is not None or self.where is not None):
            _fail("aggregate", "aggregate 'duration' is the whole session's; remove event_type and where")
        if self.session_events is not None:
            allowed = set(self.session_events)
            for key, types in (("event_type", self.event_type), ("before", self.before)):
                for t in types or ():
                    if t not in allowed:
                        _fail(key, f"{t!r} is not among session_events; sessions only hold those")
        return self

    def canonical(self) -> dict[str, Any]:
        data = super().canonical()
        for key in ("before", "session_events"):
            if data.get(key) is not None:
                data[key] = sorted(set(data[key]))
        return data


class DerivedFeature(_Feature):
    """Arithmetic over other features; any null input, or a division by zero, gives null."""

    kind: Literal["derived"]
    expr: str = Field(
        description="Arithmetic over other features' names, e.g. spend_30d / (purchases_30d + 1)."
    )

    @field_validator("expr")
    @classmethod
    def _valid_expr(cls, value: str) -> str:
        parse_expression(value)
        return value

    @property
    def expression(self) -> Expr:
        return parse_expression(self.expr)

    def canonical(self) -> dict[str, Any]:
        data = super().canonical()
        data["expr"] = self.expression.text()
        return data


class AttributeFeature(_Feature):
    """A customer attribute as of the time: the version with the latest ``valid_from <= t`` among versions
    with ``available_at <= t``."""

    kind: Literal["attribute"]
    attribute: str = Field(description="The attribute's name in the attributes table.")
    source: str | None = Field(default=None, description="The declared attributes source; any when absent.")
    type: Literal["string", "number", "boolean", "days_since"] = Field(
        default="string", description="How the text value is read; days_since: days from a date to the time."
    )


class TriggerFeature(_Feature):
    """A field of the row's trigger event (the campaign send a respond row is about): its campaign id, type,
    number of offers, duration. Null on rows without a trigger (cutoff actions; a live request that names none).
    """

    kind: Literal["trigger"]
    field: str = Field(
        description="The trigger event's field: a typed one (campaign_id) or properties.<key>."
    )
    type: Literal["string", "number"] | None = Field(
        default=None,
        description="How the value is read: number parses text such as 4 or 2.5 (anything else is null); "
        "default: number for amount and quantity, string otherwise.",
    )

    @field_validator("field")
    @classmethod
    def _known_field(cls, value: str) -> str:
        field_kind(value)  # raises, naming the fields there are
        if value == EVENT_DATE:
            raise ValueError("a trigger's event_date is not a feature; use a typed field or properties.<key>")
        return value

    @model_validator(mode="after")
    def _numbers_stay_numbers(self) -> TriggerFeature:
        if self.type == "string" and field_kind(self.field) == "number":
            _fail("type", f"{self.field} is a number; remove type or use type: number")
        return self

    @property
    def value_type(self) -> str:
        if self.type is not None:
            return self.type
        return "number" if field_kind(self.field) == "number" else "string"

    def canonical(self) -> dict[str, Any]:
        data = super().canonical()
        data["type"] = self.value_type
        return data


def _kind_of(value: Any) -> str:
    kind = value.get("kind", "aggregate") if isinstance(value, dict) else getattr(value, "kind", None)
    return f"kind-{kind}"


FeatureDefinition = Annotated[
    Annotated[AggregateFeature, Tag("kind-aggregate")]
    | Annotated[SessionFeature, Tag("kind-session")]
    | Annotated[DerivedFeature, Tag("kind-derived")]
    | Annotated[AttributeFeature, Tag("kind-attribute")]
    | Annotated[TriggerFeature, Tag("kind-trigger")],
    Discriminator(
        _kind_of,
        custom_error_type="unknown_kind",
        custom_error_message="kind must be one of aggregate, session, derived, attribute, trigger",
    ),
]
"""One entry of ``features:``; ``kind`` picks the model (``aggregate`` when absent)."""

AnyFeature = AggregateFeature | SessionFeature | DerivedFeature | AttributeFeature | TriggerFeature


def feature_set_version(features: Sequence[AnyFeature]) -> str:
    """A content hash of the definitions (defaults resolved, descriptions ignored), e.g. ``fs-3f2a…``.

    Two sets with the same features in the same order have the same version; any change to a definition
    that can change a value (a window, a bucket, a predicate, an order of columns) changes it.
    """
    return "fs-" + content_hash([f.canonical() for f in features])


def check_feature_set(
    features: Sequence[AnyFeature],
    *,
    event_types: Iterable[str] | None = None,
    attribute_sources: Mapping[str, Sequence[str] | None] | None = None,
) -> list[tuple[tuple[int | str, ...], str]]:
    """Problems that need the whole set (or the rest of the spec): ``[(key path, message), ...]``.

    Checks unique names, references of derived features (unknown names, cycles), event types against the
    declared ones, and attribute features against the declared attribute sources (when given).
    """
    problems: list[tuple[tuple[int | str, ...], str]] = []
    first: dict[str, int] = {}
    for i, f in enumerate(features):
        if f.name in first:
            problems.append(((i, "name"), f"{f.name!r} is already the name of features[{first[f.name]}]"))
        else:
            first[f.name] = i
    allowed = None if event_types is None else set(event_types)
    for i, f in enumerate(features):
        if isinstance(f, AggregateFeature | SessionFeature) and allowed is not None:
            keys: list[tuple[str, list[str] | None]] = [("event_type", f.event_type)]
            if isinstance(f, SessionFeature):
                keys += [("before", f.before), ("session_events", f.session_events)]
            for key, types in keys:
                for t in types or ():
                    if t not in allowed:
                        problems.append(
                            (
                                (i, key),
                                f"{t!r} is not a declared event type; declare it in events.extra_types "
                                f"or use one of: {', '.join(sorted(allowed))}",
                            )
                        )
        if isinstance(f, AttributeFeature) and attribute_sources is not None:
            if f.source is None:
                if not attribute_sources:
                    problems.append(
                        ((i, "attribute"), "no attributes source is declared; add one under attributes")
                    )
            elif f.source not in attribute_sources:
                known = ", ".join(sorted(attribute_sources)) or "(none declared)"
                problems.append(
                    ((i, "source"), f"{f.source!r} is not a declared attributes source; known: {known}")
                )
            else:
                kept = attribute_sources[f.source]
                if kept is not None and f.attribute not in kept:
                    problems.append(
                        (
                            (i, "attribute"),
                            f"{f.attribute!r} is not among the attributes of source {f.source!r}: {', '.join(kept)}",
                        )
                    )
        if isinstance(f, DerivedFeature):
            for ref in sorted(f.expression.refs()):
                if ref not in first:
                    problems.append(((i, "expr"), f"{ref!r} is not a feature of this set"))
    problems.extend(_cycles(features, first))
    return problems


def _cycles(
    features: Sequence[AnyFeature], index: Mapping[str, int]
) -> list[tuple[tuple[int | str, ...], str]]:
    deps = {
        f.name: sorted(r for r in f.expression.refs() if r in index)
        for f in features
        if isinstance(f, DerivedFeature)
    }
    state: dict[str, int] = {}
    out: list[tuple[tuple[int | str, ...], str]] = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in deps.get(name, ()):
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep) :], dep] if dep in path else [name, dep]
                out.append(((index[name], "expr"), "derived features form a cycle: " + " -> ".join(cycle)))
            elif dep not in state:
                visit(dep, [*path, dep])
        state[name] = 2

    for name in deps:
        if name not in state:
            visit(name, [name])
    return out


def derived_order(features: Sequence[AnyFeature]) -> list[int]:
    """Indexes of derived features in an order where each comes after the derived features it uses."""
    names = {f.name: i for i, f in enumerate(features)}
    done: set[int] = set()
    order: list[int] = []

    def visit(i: int) -> None:
        if i in done:
            return
        done.add(i)
        f = features[i]
        assert isinstance(f, DerivedFeature)
        for ref in sorted(f.expression.refs()):
            j = names[ref]
            if isinstance(features[j], DerivedFeature):
                visit(j)
        order.append(i)

    for i, f in enumerate(features):
        if isinstance(f, DerivedFeature):
            visit(i)
    return order


def validate_features(
    features: Sequence[AnyFeature],
    *,
    event_types: Iterable[str] | None = None,
    attribute_sources: Mapping[str, Sequence[str] | None] | None = None,
) -> None:
    """Raise :class:`ExpressionError` listing every set-level problem (for use outside a project spec)."""
    problems = check_feature_set(features, event_types=event_types, attribute_sources=attribute_sources)
    if problems:
        lines = [f"features[{loc[0]}].{'.'.join(str(p) for p in loc[1:])}: {msg}" for loc, msg in problems]
        raise ExpressionError("; ".join(lines))
