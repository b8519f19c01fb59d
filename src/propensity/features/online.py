"""The online feature engine: incremental per-customer state, feature vectors as of now in microseconds.

Events arrive one at a time in any order: late, out of order, duplicated. The engine keeps, per customer, a
small state per group of features that share a filter and a window (a dict of time buckets, or one accumulator
for lifetime windows), the session events of the session horizon, attribute versions, and a few bookkeeping
fields. A read at time ``t`` folds the buckets inside each window; its result equals the offline engine's at
``t`` whenever ``t`` is not earlier than the customer's *floor*: the latest ``available_at`` applied (raised to
the ``event_time`` of a future-dated event once a read has taken it in).

>>> from datetime import datetime, timezone
>>> from propensity.features.offline import parse_features
>>> engine = OnlineFeatureEngine(parse_features([
...     {"name": "purchases_7d", "aggregate": "count", "event_type": "purchase", "window": "7d"},
...     {"name": "last_category", "aggregate": "last", "field": "category", "window": "lifetime"}]))
>>> t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
>>> engine.apply({"event_id": "e1", "customer_id": "c1", "event_type": "purchase", "event_time": t0,
...               "available_at": t0, "category": "shoes"})
True
>>> engine.apply({"event_id": "e1", "customer_id": "c1", "event_type": "purchase", "event_time": t0,
...               "available_at": t0, "category": "shoes"})  # a duplicate is ignored
False
>>> engine.vector("c1", as_of=datetime(2024, 1, 2, tzinfo=timezone.utc))
(1, 'shoes')
>>> engine.vector("c1", as_of=datetime(2024, 1, 9, tzinfo=timezone.utc))
(0, 'shoes')
"""

from __future__ import annotations

import contextlib
import gc
import json
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol, cast
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa

from propensity.config.features import (
    AggregateFeature,
    AnyFeature,
    AttributeFeature,
    DerivedFeature,
    SessionFeature,
    TriggerFeature,
)
from propensity.config.predicates import EVENT_DATE, PROPERTIES_PREFIX, compile_expression, field_kind
from propensity.features._online_ingest import (
    AV,
    CID,
    EID,
    ET,
    LAST,
    MAX,
    MIN,
    SET,
    SUM,
    TYPE,
    Ingest,
    compile_ingest,
)
from propensity.features._plan import US, AggGroup, EventFilter, FeaturePlan, SessionGroup
from propensity.features._sqlgen import DATE_PATTERN, DATE_TZ_PATTERN, FALSE_WORDS, NUMBER_PATTERN, TRUE_WORDS

# Internal event: a tuple with these positions (built once per event; no other per-event objects).
_EID, _CID, _TYPE, _ET, _AV = EID, CID, TYPE, ET, AV  # the generated ingest functions share them
_TYPED = ("amount", "quantity", "currency", "sku", "category", "campaign_id", "channel", "plan")
_FIELD_POS = {name: 5 + i for i, name in enumerate(_TYPED)}
_PROPS = 5 + len(_TYPED)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_NEG_INF = -(1 << 62)

# Accumulator slots: 0 count, 1 min event_time, 2 max event_time, then one or two per operation.
_SUM, _MIN, _MAX, _SET, _LAST = SUM, MIN, MAX, SET, LAST
# Outputs
_O_COUNT, _O_SUM, _O_MEAN, _O_VALUE, _O_DISTINCT, _O_LAST, _O_SINCE_LAST, _O_SINCE_FIRST = range(8)

_ATTR_COLUMNS = ("customer_id", "attribute", "value", "source", "valid_from", "available_at")
_NUMBER_RE = re.compile(NUMBER_PATTERN, re.ASCII)
_DATE_RE = re.compile(DATE_PATTERN, re.ASCII)
_DATE_TZ_RE = re.compile(DATE_TZ_PATTERN, re.ASCII)


class AsOfError(ValueError):
    """A read asked for a time earlier than what the engine has already taken in for that customer."""


def to_micros(value: Any) -> int:
    """Epoch microseconds from a tz-aware datetime or an int (already microseconds)."""
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{value!r} has no time zone; timestamps must be timezone-aware (UTC)")
        return (value - _EPOCH) // _ONE_US
    raise TypeError(f"expected a datetime or epoch microseconds, got {type(value).__name__}")


def _date_of(zone: str | None) -> Callable[[int], str]:
    """Epoch microseconds → the calendar date in ``zone`` as 'YYYY-MM-DD' (exact: integer arithmetic)."""
    if zone is None or zone == "UTC":
        return lambda et: (_EPOCH + timedelta(microseconds=et)).date().isoformat()
    z = ZoneInfo(zone)
    return lambda et: (_EPOCH + timedelta(microseconds=et)).astimezone(z).date().isoformat()


def _getter(field: str, zone: str | None = None) -> Callable[[tuple[Any, ...]], Any]:
    if field == EVENT_DATE:
        date_of = _date_of(zone)
        return lambda ev: date_of(ev[_ET])
    if field.startswith(PROPERTIES_PREFIX):
        key = field[len(PROPERTIES_PREFIX) :]

        def prop(ev: tuple[Any, ...]) -> Any:
            props = ev[_PROPS]
            return None if props is None else props.get(key)

        return prop
    pos = _FIELD_POS[field]
    return lambda ev: ev[pos]


def _python_filter(flt: EventFilter, zone: str | None = None) -> Callable[[tuple[Any, ...]], bool] | None:
    return None if flt.predicate is None else flt.predicate.python(lambda field: _getter(field, zone))


class _Window:
    """One window of a filter group: where its state lives and which features read it."""

    __slots__ = ("bucket", "counts_only", "lifetime", "n", "outputs", "state")

    def __init__(self, state: int, bucket: int, n: int, outputs: tuple[tuple[int, int, int], ...]) -> None:
        self.state = state
        self.lifetime = bucket == 0
        self.bucket = bucket
        self.n = n
        self.outputs = outputs
        self.counts_only = all(kind == _O_COUNT for _, kind, _ in outputs)


class _FilterGroup:
    """Aggregate features sharing an event filter, compiled for the hot path.

    Each of its windows keeps, per customer, either one accumulator (lifetime) or ``[buckets, total, oldest, newest]``:
    a dict of bucket index → accumulator, the accumulator of all those buckets together (so a read whose window
    still covers every bucket is O(1)), and the oldest and newest bucket indexes held.

    An accumulator is a list: ``[count, min event_time, max event_time, *op slots]`` where each operation
    (sum: 2 slots, sum and non-null count; min; max; distinct: a set; last: 2 slots, key and value) adds slots.
    """

    __slots__ = (
        "getters",
        "has_last",
        "has_set",
        "hot",
        "ops",
        "positions",
        "pred",
        "simple",
        "types",
        "windows",
    )

    def __init__(self, plan: FeaturePlan, groups: list[AggGroup]) -> None:
        self.types = groups[0].filter.event_types
        self.pred = _python_filter(groups[0].filter, plan.zone)
        slots: dict[tuple[int, str], int] = {}
        next_slot = 3
        for g in groups:
            for i in g.features:
                f = plan.features[i]
                assert isinstance(f, AggregateFeature)
                if f.field is not None:
                    key = (_OP_OF[f.aggregate], f.field)
                    if key not in slots:
                        slots[key] = next_slot
                        next_slot += 2 if key[0] in (_SUM, _LAST) else 1
        self.ops: tuple[tuple[int, int], ...] = tuple((code, slot) for (code, _), slot in slots.items())
        self.getters = tuple(_getter(field, plan.zone) for (_, field) in slots)
        self.positions = tuple(_FIELD_POS.get(field) for (_, field) in slots)
        self.simple = not self.ops
        self.has_set = any(code == _SET for code, _ in self.ops)
        self.has_last = any(code == _LAST for code, _ in self.ops)
        windows = []
        for g in groups:
            outputs = []
            for i in g.features:
                f = plan.features[i]
                assert isinstance(f, AggregateFeature)
                slot = 0 if f.field is None else slots[(_OP_OF[f.aggregate], f.field)]
                outputs.append((i, _OUT_OF[f.aggregate], slot))
            w = g.window
            windows.append(
                _Window(g.index, 0 if w is None else w.bucket_us, 0 if w is None else w.n, tuple(outputs))
            )
        self.windows = tuple(windows)
        self.hot = tuple((w.state, w.bucket, w.n) for w in windows)  # unpacked in the apply loop

    def new(self, et: int, key: tuple[Any, ...], vals: Sequence[Any]) -> list[Any]:
        acc: list[Any] = [1, et, et]
        for (code, _slot), v in zip(self.ops, vals, strict=True):
            if code == _SUM:
                acc += (0.0, 0) if v is None else (v, 1)
            elif code == _SET:
                acc.append(None if v is None else {v})
            elif code == _LAST:
                acc += (None, None) if v is None else (key, v)
            else:
                acc.append(v)
        return acc

    def update_window(
        self, aggs: list[Any], si: int, b: int, n: int, et: int, floor: int, key: Any, vals: Sequence[Any]
    ) -> None:
        """Take one event into the bucketed window state ``aggs[si]`` (bucket width ``b`` µs, ``n`` buckets).

        The general case, every branch; the generated ingest functions inline only the common one (the bucket
        is already held) and call this for the rest.
        """
        simple = self.simple
        k = et // b
        kmin = floor // b - n + 1
        if k < kmin:
            return  # outside the window at every time this customer can still be read at
        state = aggs[si]
        if state is None:
            acc = [1, et, et] if simple else self.new(et, key, vals)
            aggs[si] = [{k: acc}, self.copy(acc), k, k]
            return
        buckets = state[0]
        acc = buckets.get(k)
        if acc is None and state[3] < kmin:
            # Everything held has left the window for good (the usual case for a quiet customer).
            buckets.clear()
            if simple:
                buckets[k] = [1, et, et]
                state[1] = [1, et, et]
            else:
                buckets[k] = acc = self.new(et, key, vals)
                state[1] = self.copy(acc)
            state[2] = state[3] = k
            return
        if acc is None:
            acc = buckets[k] = [1, et, et] if simple else self.new(et, key, vals)
            if k > state[3]:
                state[3] = k
            if state[2] < kmin:
                # Drop the buckets that have left the window for good; re-total the rest.
                for old in [x for x in buckets if x < kmin]:
                    del buckets[old]
                if len(buckets) == 1:
                    state[1] = self.copy(acc)
                    state[2] = k
                else:
                    state[1] = self.merge(buckets.values())
                    state[2] = min(buckets)
                return
            if k < state[2]:
                state[2] = k
        elif simple:
            acc[0] += 1
            if et < acc[1]:
                acc[1] = et
            elif et > acc[2]:
                acc[2] = et
        else:
            self.add(acc, et, key, vals)
        tot = state[1]
        if simple:
            tot[0] += 1
            if et < tot[1]:
                tot[1] = et
            elif et > tot[2]:
                tot[2] = et
        else:
            self.add(tot, et, key, vals)

    def copy(self, acc: list[Any]) -> list[Any]:
        out = list(acc)
        if self.has_set:
            for code, slot in self.ops:
                if code == _SET and out[slot] is not None:
                    out[slot] = set(out[slot])
        return out

    def add(self, acc: list[Any], et: int, key: tuple[Any, ...], vals: Sequence[Any]) -> None:
        acc[0] += 1
        if et < acc[1]:
            acc[1] = et
        elif et > acc[2]:
            acc[2] = et
        for (code, slot), v in zip(self.ops, vals, strict=True):
            if v is None:
                continue
            if code == _SUM:
                acc[slot] += v
                acc[slot + 1] += 1
            elif code == _MIN:
                cur = acc[slot]
                if cur is None or v < cur:
                    acc[slot] = v
            elif code == _MAX:
                cur = acc[slot]
                if cur is None or v > cur:
                    acc[slot] = v
            elif code == _SET:
                if acc[slot] is None:
                    acc[slot] = {v}
                else:
                    acc[slot].add(v)
            else:
                cur = acc[slot]
                if cur is None or key > cur:
                    acc[slot] = key
                    acc[slot + 1] = v

    def merge(self, accs: Iterable[list[Any]]) -> list[Any] | None:
        """A fresh accumulator equal to all of ``accs`` together (None if there are none); inputs untouched."""
        m: list[Any] | None = None
        for a in accs:
            if m is None:
                m = list(a)
                for code, slot in self.ops:
                    if code == _SET and m[slot] is not None:
                        m[slot] = set(m[slot])
                continue
            m[0] += a[0]
            if a[1] < m[1]:
                m[1] = a[1]
            if a[2] > m[2]:
                m[2] = a[2]
            for code, slot in self.ops:
                if code == _SUM:
                    m[slot] += a[slot]
                    m[slot + 1] += a[slot + 1]
                    continue
                v = a[slot]
                if v is None:
                    continue
                cur = m[slot]
                if code == _MIN:
                    if cur is None or v < cur:
                        m[slot] = v
                elif code == _MAX:
                    if cur is None or v > cur:
                        m[slot] = v
                elif code == _SET:
                    if cur is None:
                        m[slot] = set(v)
                    else:
                        cur |= v
                elif cur is None or v > cur:
                    m[slot] = v
                    m[slot + 1] = a[slot + 1]
        return m


_OP_OF = {"sum": _SUM, "mean": _SUM, "min": _MIN, "max": _MAX, "count_distinct": _SET, "last": _LAST}
_OUT_OF = {
    "count": _O_COUNT,
    "sum": _O_SUM,
    "mean": _O_MEAN,
    "min": _O_VALUE,
    "max": _O_VALUE,
    "count_distinct": _O_DISTINCT,
    "last": _O_LAST,
    "time_since_last": _O_SINCE_LAST,
    "time_since_first": _O_SINCE_FIRST,
}


class _SessionGroup:
    __slots__ = ("features", "filters", "gap", "horizon", "idx", "lookback", "types")

    def __init__(self, plan: FeaturePlan, g: SessionGroup) -> None:
        self.idx = g.index
        self.gap = g.gap_us
        self.lookback = g.lookback_us
        self.horizon = g.horizon_us
        self.types = g.session_events
        self.filters = tuple(
            (
                1 << bit,
                None if flt.event_types is None else frozenset(flt.event_types),
                _python_filter(flt, plan.zone),
            )
            for bit, flt in enumerate(g.filters)
        )
        feats: list[tuple[int, str, int, int, int]] = []
        for i in g.features:
            f = plan.features[i]
            assert isinstance(f, SessionFeature)
            counted, before = plan.session_bits[i]
            window = 0 if f.window is None else f.window.seconds * US
            feats.append(
                (i, f.aggregate, 0 if counted < 0 else 1 << counted, 0 if before < 0 else 1 << before, window)
            )
        self.features = tuple(feats)

    def mask(self, ev: tuple[Any, ...]) -> int:
        m = 0
        etype = ev[_TYPE]
        for bit, types, pred in self.filters:
            if (types is None or etype in types) and (pred is None or pred(ev)):
                m |= bit
        return m

    def read(self, lst: list[tuple[int, int]] | None, t: int, out: list[Any]) -> None:
        gap, lookback = self.gap, self.lookback
        start = -1
        if lst:
            last = lst[-1][0]
            if t - last <= gap and last > t - lookback:
                start = len(lst) - 1
                floor = t - lookback
                while start > 0:
                    prev = lst[start - 1][0]
                    if prev <= floor or lst[start][0] - prev > gap:
                        break
                    start -= 1
        for i, kind, counted, before, window in self.features:
            if kind == "sessions":
                n = 0
                if lst:
                    lo = t - window
                    j = len(lst) - 1
                    while j >= 0 and lst[j][0] > lo:
                        if j == 0 or lst[j - 1][0] <= lo or lst[j][0] - lst[j - 1][0] > gap:
                            n += 1
                        j -= 1
                out[i] = n
            elif start < 0 or lst is None:
                out[i] = None if kind == "duration" else 0
            elif kind == "duration":
                out[i] = (lst[-1][0] - lst[start][0]) / 1_000_000.0
            elif kind == "count":
                out[i] = sum(1 for k in range(start, len(lst)) if lst[k][1] & counted)
            else:
                first_before = None
                for k in range(start, len(lst)):
                    if lst[k][1] & before:
                        first_before = lst[k][0]
                        break
                out[i] = sum(
                    1
                    for k in range(start, len(lst))
                    if lst[k][1] & counted and (first_before is None or lst[k][0] < first_before)
                )


class CustomerState(NamedTuple):
    """One customer's engine state as plain data, for stores that keep it outside this process (shared with the
    engine, not copied). ``aggs[i]`` is None, an accumulator list (lifetime windows) or ``[buckets, total,
    oldest, newest]`` (see :class:`_FilterGroup`; :meth:`OnlineFeatureEngine.state_layout` says which slots hold
    sets and tuples); ``sessions`` lists ``(event_time, mask)``; ``pending`` holds internal event tuples;
    ``seen`` maps event ids to ``available_at``; ``attrs`` maps attribute names to version tuples."""

    floor: int
    aggs: list[Any]
    sessions: list[list[tuple[int, int]] | None]
    pending: list[tuple[Any, ...]] | None
    seen: dict[str, int]
    seen_limit: int
    attrs: dict[str, list[tuple[Any, ...]]] | None


class StateLayout(NamedTuple):
    """How one aggregate state (``CustomerState.aggs[i]``) is shaped: bucketed or one lifetime accumulator, and
    the accumulator slots that hold a set (count_distinct) or a tuple key (last)."""

    bucketed: bool
    set_slots: tuple[int, ...]
    tuple_slots: tuple[int, ...]


class ColdStates(Protocol):
    """Customers whose state is stored elsewhere (a snapshot) and decoded only when first needed.

    :meth:`OnlineFeatureEngine.hold_cold` hands one to an engine: a customer the engine has not touched yet is
    looked up here on its first read or attribute, its state decoded once and then held like any other."""

    def __contains__(self, customer_id: object) -> bool: ...

    def __len__(self) -> int: ...

    def ids(self) -> Iterable[str]:
        """The customers still cold."""
        ...

    def take(self, customer_id: str) -> CustomerState | None:
        """Decode this customer's state and forget it here (None if not held)."""
        ...

    def discard(self, customer_id: str) -> None: ...


class _Customer:
    __slots__ = ("aggs", "attrs", "floor", "pending", "seen", "seen_limit", "sessions")

    def __init__(self, n_groups: int, n_sessions: int) -> None:
        self.floor = _NEG_INF
        self.aggs: list[Any] = [None] * n_groups
        self.sessions: list[list[tuple[int, int]] | None] = [None] * n_sessions
        self.pending: list[tuple[Any, ...]] | None = None
        self.seen: dict[str, int] = {}
        self.seen_limit = 64
        self.attrs: dict[str, list[tuple[Any, ...]]] | None = None


def _attribute_value(f: AttributeFeature, value: str | None, t: int) -> Any:
    if value is None or f.type == "string":
        return value
    if f.type == "number":
        return float(value.strip(" ")) if _NUMBER_RE.match(value) else None
    if f.type == "boolean":
        low = value.strip(" ").lower()
        return True if low in TRUE_WORDS else False if low in FALSE_WORDS else None
    try:
        if _DATE_RE.match(value):
            ts = to_micros(datetime.fromisoformat(value).replace(tzinfo=UTC))
        elif _DATE_TZ_RE.match(value):
            ts = to_micros(datetime.fromisoformat(value.replace("Z", "+00:00")))
        else:
            return None
    except ValueError:
        return None
    return (t - ts) / 86_400_000_000.0


def _trigger_value(f: TriggerFeature, v: Any) -> Any:
    """A trigger field's value as the offline engine reads it (numbers from text as attributes do)."""
    if v is None:
        return None
    if field_kind(f.field) == "number":
        return float(v)
    if f.value_type == "number":
        return float(v.strip(" ")) if isinstance(v, str) and _NUMBER_RE.match(v) else None
    return str(v)


def _empty_value(f: AnyFeature) -> Any:
    """A feature's value over no events: 0 for counts, 0.0 for sums, null otherwise."""
    if isinstance(f, AggregateFeature):
        return {"count": 0, "count_distinct": 0, "sum": 0.0}.get(f.aggregate)
    if isinstance(f, SessionFeature):
        return None if f.aggregate == "duration" else 0
    return None


class OnlineFeatureEngine:
    """Feature vectors as of any time not earlier than a customer's floor, from events applied in any order.

    ``dedupe_horizon`` bounds the event ids kept per customer for deduplication: a duplicate is recognised if
    it arrives while the customer's floor is within this span of the original's ``available_at``.
    """

    def __init__(
        self, features: Sequence[AnyFeature] | FeaturePlan, *, dedupe_horizon: timedelta = timedelta(days=1)
    ) -> None:
        self.plan = features if isinstance(features, FeaturePlan) else FeaturePlan(features)
        self.feature_names: tuple[str, ...] = self.plan.names
        self.version = self.plan.version
        by_filter: dict[object, list[AggGroup]] = {}
        for g in self.plan.agg_groups:
            by_filter.setdefault(g.filter.key, []).append(g)
        self._groups = [_FilterGroup(self.plan, gs) for gs in by_filter.values()]
        self._n_states = len(self.plan.agg_groups)
        self._sessions = [_SessionGroup(self.plan, g) for g in self.plan.session_groups]
        self._ingest_by_type: dict[str, Ingest] = {}
        self._attr_features = [
            (i, f) for i in self.plan.attributes if isinstance(f := self.plan.features[i], AttributeFeature)
        ]
        self._attr_names = {f.attribute for _, f in self._attr_features}
        self._trigger_features = [
            (i, f) for i in self.plan.triggers if isinstance(f := self.plan.features[i], TriggerFeature)
        ]
        index = {n: i for i, n in enumerate(self.plan.names)}
        self._derived: list[tuple[int, Callable[[Sequence[Any]], float | None]]] = []
        for i in self.plan.derived:
            f = self.plan.features[i]
            assert isinstance(f, DerivedFeature)
            self._derived.append((i, compile_expression(f.expression, index.__getitem__)))
        self._parse_props = self.plan.uses_properties()
        # The typed event fields this feature set reads; a batch converts only these (the rest stay null in the
        # internal event tuples, pending ones included: a state is only ever read by the same feature set).
        read: set[str] = {f.field for f in self.plan.features if isinstance(f, AggregateFeature) and f.field}
        filters = [g.filter for g in self.plan.agg_groups] + [
            f for g in self.plan.session_groups for f in g.filters
        ]
        for flt in filters:
            if flt.predicate is not None:
                read |= flt.predicate.fields()
        self._batch_fields = frozenset(read)
        self._dedupe_us = int(dedupe_horizon.total_seconds() * US)
        self._customers: dict[str, _Customer] = {}
        # Customers loaded lazily from a snapshot, and the events that arrived for them while still cold (in
        # arrival order; applied when the state is first decoded, exactly as they would have been at arrival).
        self._cold: ColdStates | None = None
        self._backlog: dict[str, list[tuple[Any, ...]]] = {}
        self.watermark = _NEG_INF  # the latest available_at applied, any customer
        self.events_applied = 0
        self._defaults = tuple(_empty_value(f) for f in self.plan.features)

    # ------------------------------------------------------------------------------------------- applying

    def _compile(self, etype: str) -> Ingest:
        """The generated ingest function for events of this type (see ``_online_ingest``), made once."""
        ingest, _source = compile_ingest(
            etype,
            [g for g in self._groups if g.types is None or etype in g.types],
            [s for s in self._sessions if s.types is None or etype in s.types],
        )
        self._ingest_by_type[etype] = ingest
        return ingest

    def _coerce(self, event: Mapping[str, Any]) -> tuple[Any, ...]:
        props = event.get("properties")
        if props is not None and self._parse_props:
            if isinstance(props, str):
                props = json.loads(props)
            props = {k: v if isinstance(v, str) or v is None else json.dumps(v) for k, v in props.items()}
        else:
            props = None
        amount, quantity = event.get("amount"), event.get("quantity")
        return (
            str(event["event_id"]),
            str(event["customer_id"]),
            event["event_type"],
            to_micros(event["event_time"]),
            to_micros(event["available_at"]),
            None if amount is None else float(amount),
            None if quantity is None else float(quantity),
            event.get("currency"),
            event.get("sku"),
            event.get("category"),
            event.get("campaign_id"),
            event.get("channel"),
            event.get("plan"),
            props,
        )

    def apply(self, event: Mapping[str, Any]) -> bool:
        """Take one event in (canonical field names; timestamps tz-aware or epoch µs). False if a duplicate."""
        return self._apply(self._coerce(event))

    def apply_batch(self, table: pa.Table) -> int:
        """Apply every row of an events table (the log's schema); returns how many were new."""
        n = table.num_rows
        cols: list[list[Any]] = []
        for name in ("event_id", "customer_id", "event_type", "event_time", "available_at", *_TYPED):
            if name not in table.column_names or (name in _FIELD_POS and name not in self._batch_fields):
                cols.append([None] * n)
                continue
            col = table.column(name)
            if pa.types.is_timestamp(col.type):
                col = col.cast(pa.timestamp("us", tz=col.type.tz)).cast(pa.int64())
            elif name in ("amount", "quantity"):
                col = col.cast(pa.float64())
            cols.append(col.to_pylist())
        if self._parse_props and "properties" in table.column_names:
            props = [
                None
                if p is None
                else {
                    k: v if isinstance(v, str) or v is None else json.dumps(v)
                    for k, v in json.loads(p).items()
                }
                for p in table.column("properties").cast(pa.string()).to_pylist()
            ]
        else:
            props = [None] * n
        cols.append(props)
        with _collector_paused(bulk=n >= _BULK_ROWS):
            return self._apply_rows(zip(*cols, strict=True))

    def _apply_rows(self, rows: Iterable[tuple[Any, ...]]) -> int:
        """:meth:`_apply` over many events, with its lookups hoisted out of the loop (same steps, same order)."""
        customers = self._customers
        ingest_by_type = self._ingest_by_type
        seen_span = self._dedupe_us
        n_states, n_sessions = self._n_states, len(self._sessions)
        applied = held = 0
        watermark = self.watermark
        try:
            for ev in rows:
                cid = ev[1]
                st = customers.get(cid)
                if st is None:
                    if self._cold is not None and cid in self._cold:
                        self.watermark = watermark
                        self._apply(ev)  # held back until the customer's state is decoded
                        watermark = self.watermark
                        held += 1
                        continue
                    st = customers[cid] = _Customer(n_states, n_sessions)
                eid = ev[0]
                seen = st.seen
                if eid in seen:
                    continue
                av = ev[4]
                seen[eid] = av
                if len(seen) > st.seen_limit:
                    cutoff = st.floor - seen_span
                    st.seen = {k: v for k, v in seen.items() if v >= cutoff}
                    st.seen_limit = max(64, 2 * len(st.seen))
                applied += 1
                if av > watermark:
                    watermark = av
                floor = st.floor
                if av > floor:
                    st.floor = floor = av
                    if st.pending is not None:
                        self._promote(st, av)
                        floor = st.floor
                if ev[3] > floor:
                    if st.pending is None:
                        st.pending = [ev]
                    else:
                        st.pending.append(ev)
                    continue
                ingest = ingest_by_type.get(ev[2])
                if ingest is None:
                    ingest = self._compile(ev[2])
                ingest(st, ev)
        finally:
            self.watermark = watermark
            self.events_applied += applied  # events held for a cold customer are counted when applied
        return applied + held

    def _apply(self, ev: tuple[Any, ...]) -> bool:
        cid = ev[_CID]
        st = self._customers.get(cid)
        if st is None:
            if self._cold is not None and cid in self._cold:
                # Still cold: keep the event for when the state is first needed (counted then; a duplicate of an
                # event the snapshot holds is recognised then too).
                self._backlog.setdefault(cid, []).append(ev)
                if ev[_AV] > self.watermark:
                    self.watermark = ev[_AV]
                return True
            st = self._customers[cid] = _Customer(self._n_states, len(self._sessions))
        eid = ev[_EID]
        seen = st.seen
        if eid in seen:
            return False
        av = ev[_AV]
        seen[eid] = av
        if len(seen) > st.seen_limit:
            self._prune_seen(st)
        self.events_applied += 1
        if av > self.watermark:
            self.watermark = av
        if av > st.floor:
            st.floor = av
            if st.pending is not None:
                self._promote(st, av)
        if ev[_ET] > st.floor:
            if st.pending is None:
                st.pending = [ev]
            else:
                st.pending.append(ev)
        else:
            self._ingest(st, ev)
        return True

    def _prune_seen(self, st: _Customer) -> None:
        cutoff = st.floor - self._dedupe_us
        st.seen = {k: v for k, v in st.seen.items() if v >= cutoff}
        st.seen_limit = max(64, 2 * len(st.seen))

    def _promote(self, st: _Customer, upto: int) -> None:
        assert st.pending is not None
        ready = [ev for ev in st.pending if ev[_ET] <= upto]
        if not ready:
            return
        rest = [ev for ev in st.pending if ev[_ET] > upto]
        st.pending = rest or None
        st.floor = max(st.floor, max(ev[_ET] for ev in ready))
        for ev in ready:
            self._ingest(st, ev)

    def _ingest(self, st: _Customer, ev: tuple[Any, ...]) -> None:
        ingest = self._ingest_by_type.get(ev[_TYPE])
        if ingest is None:
            ingest = self._compile(ev[_TYPE])
        ingest(st, ev)

    def apply_attribute(self, row: Mapping[str, Any]) -> None:
        """Take one attribute version: customer_id, attribute, value, valid_from, available_at[, source]."""
        if row["attribute"] not in self._attr_names:
            return
        cid = str(row["customer_id"])
        st = self._customers.get(cid) or self._warm(cid)
        if st is None:
            st = self._customers[cid] = _Customer(self._n_states, len(self._sessions))
        vf, av = to_micros(row["valid_from"]), to_micros(row["available_at"])
        value = row.get("value")
        if av > self.watermark:
            self.watermark = av
        if av > st.floor:
            st.floor = av
            if st.pending is not None:
                self._promote(st, av)
        if st.attrs is None:
            st.attrs = {}
        st.attrs.setdefault(row["attribute"], []).append(
            (vf, av, "" if value is None else value, value is not None, value, row.get("source"))
        )

    def replace_attribute_source(self, source: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Forget every version of attribute source ``source`` and take ``rows`` (its rows now): what a reload
        of the source (``propensity ingest``, which replaces its rows in the log) means online. Decodes every
        snapshot customer still cold (a reload is rare; their versions of the source must go too). Returns the
        rows taken."""
        if self._cold is not None:
            for cid in self._cold.ids():
                self._warm(cid)
        for st in self._customers.values():
            if st.attrs:
                st.attrs = {
                    name: [v for v in versions if v[5] != source] for name, versions in st.attrs.items()
                }
        taken = 0
        for row in rows:
            self.apply_attribute(row)
            taken += 1
        return taken

    # -------------------------------------------------------------------------------------------- reading

    def vector(
        self,
        customer_id: str,
        as_of: datetime | int | None = None,
        *,
        at_floor: bool = False,
        trigger: Mapping[str, Any] | None = None,
    ) -> tuple[Any, ...]:
        """The features of one customer as of ``as_of`` (default: now), in declared order.

        Raises :class:`AsOfError` if ``as_of`` is earlier than the customer's floor (values there may already
        include events the visibility rule would exclude), unless ``at_floor``: then it reads at the floor, the
        earliest time it can answer exactly (what serving wants when a future-dated event has raised the floor
        past the clock: the values already include that event).

        ``trigger`` is the event the row is about (a campaign send; canonical field names, ``properties`` as a
        mapping or JSON text): trigger features read it. Without one, or when it belongs to another customer or
        is not yet visible at ``as_of`` (its ``event_time`` / ``available_at``, when given, are later), they are
        null, as offline.
        """
        t = to_micros(as_of) if as_of is not None else int(time.time() * US)
        st = self._customers.get(customer_id)
        if st is None and self._cold is not None:
            st = self._warm(customer_id)
        if st is None:
            out = list(self._defaults)
        else:
            if t < st.floor and at_floor:
                t = st.floor
            elif t < st.floor:
                raise AsOfError(
                    f"as_of {t}µs is earlier than customer {customer_id!r}'s floor {st.floor}µs; the online "
                    "engine answers only at or after the latest event it has taken in"
                )
            if st.pending is not None:
                self._promote(st, t)
            out = list(self._defaults)
            self._read(st, t, out)
        if trigger is not None and self._trigger_features:
            self._read_trigger(customer_id, trigger, t, out)
        for i, compute in self._derived:
            out[i] = compute(out)
        return tuple(out)

    def _read_trigger(self, customer_id: str, trigger: Mapping[str, Any], t: int, out: list[Any]) -> None:
        owner = trigger.get("customer_id")
        if owner is not None and str(owner) != customer_id:
            return
        for key in ("event_time", "available_at"):
            when = trigger.get(key)
            if when is not None and to_micros(when) > t:
                return
        props = trigger.get("properties")
        if isinstance(props, str):
            props = json.loads(props)
        for i, f in self._trigger_features:
            if f.field.startswith(PROPERTIES_PREFIX):
                v = None if not props else props.get(f.field[len(PROPERTIES_PREFIX) :])
                v = v if isinstance(v, str) or v is None else json.dumps(v)
            else:
                v = trigger.get(f.field)
            out[i] = _trigger_value(f, v)

    def vector_dict(
        self,
        customer_id: str,
        as_of: datetime | int | None = None,
        *,
        trigger: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """:meth:`vector` as a mapping of feature name to value."""
        return dict(zip(self.feature_names, self.vector(customer_id, as_of, trigger=trigger), strict=True))

    def _read(self, st: _Customer, t: int, out: list[Any]) -> None:
        aggs = st.aggs
        for g in self._groups:
            for w in g.windows:
                state = aggs[w.state]
                if state is None:
                    continue
                if w.lifetime:
                    acc = state
                else:
                    kmin = t // w.bucket - w.n + 1
                    if state[2] >= kmin:
                        acc = state[1]
                    elif state[3] < kmin:
                        continue  # every bucket held has left the window
                    elif w.counts_only:
                        # Integer counts subtract exactly: remove the buckets that have left the window.
                        acc = [state[1][0] - sum(a[0] for k, a in state[0].items() if k < kmin)]
                    else:
                        acc = g.merge(a for k, a in state[0].items() if k >= kmin)
                        if acc is None:
                            continue
                for i, kind, slot in w.outputs:
                    if kind == _O_COUNT:
                        out[i] = acc[0]
                    elif kind == _O_SUM:
                        out[i] = acc[slot]
                    elif kind == _O_MEAN:
                        out[i] = acc[slot] / acc[slot + 1] if acc[slot + 1] else None
                    elif kind == _O_VALUE:
                        out[i] = acc[slot]
                    elif kind == _O_DISTINCT:
                        out[i] = 0 if acc[slot] is None else len(acc[slot])
                    elif kind == _O_LAST:
                        out[i] = acc[slot + 1]
                    elif kind == _O_SINCE_LAST:
                        out[i] = (t - acc[2]) / 1_000_000.0
                    else:
                        out[i] = (t - acc[1]) / 1_000_000.0
        for s in self._sessions:
            s.read(st.sessions[s.idx], t, out)
        if self._attr_features:
            attrs = st.attrs or {}
            for i, f in self._attr_features:
                best = None
                for version in attrs.get(f.attribute, ()):
                    visible = version[0] <= t and (f.source is None or version[5] == f.source)
                    if visible and (best is None or version[:4] > best[:4]):
                        best = version
                out[i] = None if best is None else _attribute_value(f, best[4], t)

    # ------------------------------------------------------------------------------------ bulk and stats

    def rebuild(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        events_table: str = "events",
        attributes_table: str | None = "attributes",
        batch_rows: int = 200_000,
    ) -> int:
        """Replay the event log (and attribute versions) into this engine, in ``available_at`` order.

        Only events that can still be inside a window are read: those newer than the log's latest
        ``available_at`` minus the longest window or session horizon (everything if a lifetime aggregate is
        declared). Returns the number of events applied.
        """
        horizons = [g.window.bucket_us * g.window.n for g in self.plan.agg_groups if g.window is not None]
        horizons += [g.horizon_us for g in self.plan.session_groups]
        lifetime = any(g.window is None for g in self.plan.agg_groups)
        where = ""
        if not lifetime:
            if not horizons:
                return 0
            (latest,) = con.execute(f"SELECT epoch_us(max(available_at)) FROM {events_table}").fetchall()[0]
            if latest is None:
                return 0
            where = f"WHERE epoch_us(event_time) >= {int(latest) - max(horizons)}"
        relation = cast(Any, con).sql(f"SELECT * FROM {events_table} {where} ORDER BY available_at, event_id")
        applied = 0
        for batch in relation.to_arrow_reader(batch_rows):
            applied += self.apply_batch(pa.Table.from_batches([batch]))
        if attributes_table is not None and self._attr_names:
            names = ", ".join("'" + n.replace("'", "''") + "'" for n in sorted(self._attr_names))
            con.execute(
                "SELECT customer_id, attribute, value, source, epoch_us(valid_from) AS valid_from, "
                f"epoch_us(available_at) AS available_at FROM {attributes_table} WHERE attribute IN ({names}) "
                "ORDER BY available_at"
            )
            for row in con.fetchall():
                self.apply_attribute(dict(zip(_ATTR_COLUMNS, row, strict=True)))
        return applied

    @property
    def customers(self) -> int:
        return len(self._customers) + (0 if self._cold is None else len(self._cold))

    # ----------------------------------------------------------------- state hand-over (external stores)

    def hold_cold(self, cold: ColdStates | None) -> None:
        """Serve the customers of ``cold`` (a loaded snapshot) too, decoding each one's state on first use."""
        self._cold = cold
        self._backlog = {}

    @property
    def cold(self) -> ColdStates | None:
        """The snapshot customers not decoded yet (see :meth:`hold_cold`)."""
        return self._cold

    def _warm(self, customer_id: str) -> _Customer | None:
        """The state of a cold customer, decoded now and held from here on (None if not cold)."""
        cold = self._cold
        if cold is None or customer_id not in cold:
            return None
        state = cold.take(customer_id)
        if state is None:
            return None
        self.import_customer(customer_id, state)
        st = self._customers[customer_id]
        backlog = self._backlog.pop(customer_id, None)
        if backlog:
            for ev in backlog:
                self._apply(ev)
        return st

    def is_cold(self, customer_id: str) -> bool:
        """Whether this customer's state is still undecoded in the snapshot (with no event since)."""
        return self._cold is not None and customer_id in self._cold and customer_id not in self._backlog

    def __contains__(self, customer_id: object) -> bool:
        """Whether any event or attribute of this customer has been applied."""
        return customer_id in self._customers or (self._cold is not None and customer_id in self._cold)

    def customer_ids(self) -> list[str]:
        ids = list(self._customers)
        if self._cold is not None:
            ids += self._cold.ids()
        return ids

    def export_customer(self, customer_id: str) -> CustomerState | None:
        """This customer's state as plain data (None if unknown); see :class:`CustomerState`."""
        st = self._customers.get(customer_id) or self._warm(customer_id)
        if st is None:
            return None
        return CustomerState(st.floor, st.aggs, st.sessions, st.pending, st.seen, st.seen_limit, st.attrs)

    def import_customer(self, customer_id: str, state: CustomerState) -> None:
        """Hold ``state`` (from :meth:`export_customer`, here or in another process) for this customer."""
        st = _Customer.__new__(_Customer)
        st.floor, st.aggs, st.sessions, st.pending, st.seen, st.seen_limit, st.attrs = state
        self._customers[customer_id] = st

    def drop_customer(self, customer_id: str) -> None:
        self._customers.pop(customer_id, None)
        if self._cold is not None:
            self._cold.discard(customer_id)
            self._backlog.pop(customer_id, None)

    def clear(self) -> None:
        """Forget every customer (back to an empty engine)."""
        self._customers.clear()
        self._cold = None
        self._backlog = {}
        self.watermark = _NEG_INF
        self.events_applied = 0

    def state_layout(self) -> tuple[StateLayout, ...]:
        """The shape of each aggregate state, by index in ``CustomerState.aggs``."""
        layout: list[StateLayout | None] = [None] * self._n_states
        for g in self._groups:
            sets = tuple(slot for code, slot in g.ops if code == _SET)
            keys = tuple(slot for code, slot in g.ops if code == _LAST)
            for w in g.windows:
                layout[w.state] = StateLayout(not w.lifetime, sets, keys)
        assert all(x is not None for x in layout)
        return tuple(cast(list[StateLayout], layout))

    def memory_bytes(self, customer_id: str | None = None) -> int:
        """Estimated bytes held (``sys.getsizeof`` over the state), for one customer or all."""
        if customer_id is not None:
            st = self._customers.get(customer_id)
            return 0 if st is None else _deep_size(st)
        return sys.getsizeof(self._customers) + sum(
            _deep_size(st) + sys.getsizeof(cid) for cid, st in self._customers.items()
        )


# A batch at least this large (a replay, a rebuild, a bulk load) files its new state straight as old; see below.
_BULK_ROWS = 10_000


@contextlib.contextmanager
def _collector_paused(bulk: bool) -> Iterator[None]:
    """Pause the cyclic garbage collector while a batch builds engine state; after a bulk batch, file the new
    objects as old.

    The state is plain lists, dicts and tuples without reference cycles, created by the million in a bulk apply.
    Left young, every one of them is traversed by the next young collection (a third of a bulk apply's time at
    200k customers) and again as it is promoted, to find cycles that cannot exist. For a bulk batch the young
    generations are collected first (they then hold only the batch's own objects), and ``gc.freeze()`` then
    ``gc.unfreeze()`` moves every tracked object into the oldest generation in constant time, where only a full
    collection visits them. Small batches (serving) are left to the collector as they are: promoting other
    code's young objects after each of them would keep its garbage cycles from young collections. Skipped too
    when the caller has paused the collector or froze objects of its own (a pre-fork server): never thaw them.
    """
    was_enabled = gc.isenabled()
    promote = bulk and was_enabled and gc.get_freeze_count() == 0
    if promote:
        gc.collect(1)
    gc.disable()
    try:
        yield
    finally:
        if promote:
            gc.freeze()
            gc.unfreeze()
        if was_enabled:
            gc.enable()


def _deep_size(obj: Any, seen: set[int] | None = None) -> int:
    if seen is None:
        seen = set()
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, _Customer):
        return size + sum(_deep_size(getattr(obj, s), seen) for s in _Customer.__slots__)
    if isinstance(obj, dict):
        return size + sum(_deep_size(k, seen) + _deep_size(v, seen) for k, v in obj.items())
    if isinstance(obj, list | tuple | set | frozenset):
        return size + sum(_deep_size(x, seen) for x in obj)
    return size
