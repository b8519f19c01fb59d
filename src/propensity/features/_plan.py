"""The compiled form of a feature set that both engines read: windows, filters, groups, output types.

Everything about *what* a feature means (window bounds, buckets, filters, session parameters) is resolved here
once, in integer microseconds, so that the SQL generator and the online engine cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from propensity.config.features import (
    AggregateFeature,
    AnyFeature,
    AttributeFeature,
    DerivedFeature,
    SessionFeature,
    TriggerFeature,
    derived_order,
    feature_set_version,
    validate_features,
)
from propensity.config.predicates import ExpressionError, Predicate, field_kind

US = 1_000_000


@dataclass(frozen=True)
class Window:
    """A finite, bucketed window: events with ``event_time >= start(t)`` (and ``<= t``).

    ``start(t) = floor(t / bucket) * bucket - (n - 1) * bucket``: the bucket holding t and the ``n - 1`` before
    it. With ``bucket == 1`` µs (``exact``) that is ``event_time > t - window``.
    """

    bucket_us: int
    n: int

    def start(self, t: int) -> int:
        b = self.bucket_us
        return (t - t % b) - (self.n - 1) * b

    def first_bucket(self, t: int) -> int:
        """Index (event_time // bucket) of the oldest bucket inside the window at t."""
        return t // self.bucket_us - self.n + 1


@dataclass(frozen=True)
class EventFilter:
    """Event types (None: all) and an optional predicate."""

    event_types: tuple[str, ...] | None
    predicate: Predicate | None

    @property
    def key(self) -> tuple[tuple[str, ...] | None, str | None]:
        return (self.event_types, None if self.predicate is None else self.predicate.text())


def _filter_of(f: AggregateFeature | SessionFeature) -> EventFilter:
    types = None if f.event_type is None else tuple(sorted(set(f.event_type)))
    return EventFilter(types, f.predicate)


@dataclass
class AggGroup:
    """Aggregate features sharing a filter and a window (None: lifetime): one state in the online engine."""

    index: int
    filter: EventFilter
    window: Window | None
    features: list[int] = field(default_factory=list)


@dataclass
class SessionGroup:
    """Session features sharing gap, lookback and session event types: one sorted event list online."""

    index: int
    gap_us: int
    lookback_us: int
    session_events: tuple[str, ...] | None
    filters: list[EventFilter] = field(default_factory=list)  # bit i of an event's mask: matches filters[i]
    features: list[int] = field(default_factory=list)
    horizon_us: int = 0  # events older than t - horizon never matter

    def filter_bit(self, flt: EventFilter) -> int:
        for i, existing in enumerate(self.filters):
            if existing.key == flt.key:
                return i
        self.filters.append(flt)
        return len(self.filters) - 1


def output_type(f: AnyFeature) -> pa.DataType:
    """The Arrow type of a feature's column (the same in both engines)."""
    if isinstance(f, AggregateFeature):
        if f.aggregate in ("count", "count_distinct"):
            return pa.int64()
        if f.aggregate in ("min", "max", "last") and f.field is not None and field_kind(f.field) == "text":
            return pa.string()
        return pa.float64()
    if isinstance(f, SessionFeature):
        return pa.float64() if f.aggregate == "duration" else pa.int64()
    if isinstance(f, AttributeFeature):
        return {"string": pa.string(), "boolean": pa.bool_()}.get(f.type, pa.float64())
    if isinstance(f, TriggerFeature):
        return pa.string() if f.value_type == "string" else pa.float64()
    return pa.float64()


class FeaturePlan:
    """A validated feature set, compiled. Build once, share between engines."""

    def __init__(self, features: Sequence[AnyFeature]) -> None:
        validate_features(features)
        self.features: tuple[AnyFeature, ...] = tuple(features)
        self.names: tuple[str, ...] = tuple(f.name for f in features)
        self.version = feature_set_version(features)
        self.types: tuple[pa.DataType, ...] = tuple(output_type(f) for f in features)
        self.agg_groups: list[AggGroup] = []
        self.session_groups: list[SessionGroup] = []
        self.attributes: list[int] = []
        self.triggers: list[int] = []
        self.derived: list[int] = derived_order(features)
        zones = {
            f.zone for f in features if isinstance(f, AggregateFeature | SessionFeature) and f.uses_event_date
        }
        if len(zones) > 1:
            raise ExpressionError(
                f"features read event_date in different time zones ({', '.join(sorted(zones))}); use one"
            )
        # The zone of event_date (None: no feature reads it).
        self.zone: str | None = zones.pop() if zones else None
        # per aggregate feature: (group index); per session feature: (group index, bits)
        self.agg_group_of: dict[int, int] = {}
        self.session_bits: dict[int, tuple[int, int]] = {}  # feature -> (counted bit, before bit or -1)
        agg_keys: dict[tuple[object, ...], AggGroup] = {}
        sess_keys: dict[tuple[object, ...], SessionGroup] = {}
        for i, f in enumerate(features):
            if isinstance(f, AggregateFeature):
                flt = _filter_of(f)
                window = _window_of(f)
                key = (flt.key, window)
                group = agg_keys.get(key)
                if group is None:
                    group = agg_keys[key] = AggGroup(len(self.agg_groups), flt, window)
                    self.agg_groups.append(group)
                group.features.append(i)
                self.agg_group_of[i] = group.index
            elif isinstance(f, SessionFeature):
                ev = None if f.session_events is None else tuple(sorted(set(f.session_events)))
                skey = (f.gap.seconds, f.lookback.seconds, ev)
                sgroup = sess_keys.get(skey)
                if sgroup is None:
                    sgroup = sess_keys[skey] = SessionGroup(
                        len(self.session_groups), f.gap.seconds * US, f.lookback.seconds * US, ev
                    )
                    self.session_groups.append(sgroup)
                sgroup.features.append(i)
                horizon = (
                    f.lookback.seconds if f.window is None else max(f.lookback.seconds, f.window.seconds)
                )
                sgroup.horizon_us = max(sgroup.horizon_us, horizon * US)
                counted = before = -1
                if f.aggregate in ("count", "count_before"):
                    counted = sgroup.filter_bit(_filter_of(f))
                if f.aggregate == "count_before":
                    assert f.before is not None
                    before = sgroup.filter_bit(EventFilter(tuple(sorted(set(f.before))), None))
                self.session_bits[i] = (counted, before)
            elif isinstance(f, AttributeFeature):
                self.attributes.append(i)
            elif isinstance(f, TriggerFeature):
                self.triggers.append(i)
            else:
                assert isinstance(f, DerivedFeature)

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(n, t) for n, t in zip(self.names, self.types, strict=True)])

    def uses_properties(self) -> bool:
        for f in self.features:
            fields: set[str] = set()
            if isinstance(f, AggregateFeature | SessionFeature) and f.predicate is not None:
                fields |= f.predicate.fields()
            if isinstance(f, AggregateFeature) and f.field is not None:
                fields.add(f.field)
            if any(x.startswith("properties.") for x in fields):
                return True
        return False


def _window_of(f: AggregateFeature) -> Window | None:
    bucket = f.effective_bucket
    if bucket is None:
        return None
    if bucket.seconds == 0:
        return Window(1, f.window.seconds * US)
    return Window(bucket.seconds * US, f.window.seconds // bucket.seconds)
