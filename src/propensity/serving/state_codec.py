"""Bytes for one customer's online-engine state, and back, exactly (no pickle: JSON via orjson).

A state is split in two parts so that a read fetches only what a read needs:

* the *read part*: ``[FORMAT, floor, aggs, sessions, pending, attrs]``;
* the *seen part*: ``[seen_limit, seen]`` (event ids kept for deduplication; only applying needs them).

JSON has no sets, tuples or integer dict keys, and the engine relies on all three (sets for count_distinct,
tuple comparisons for ``last`` keys, session items and attribute versions, integer bucket indexes). Rather than
tagging every container, decoding uses the engine's :meth:`~propensity.features.online.OnlineFeatureEngine.state_layout`
to restore exactly the places that hold them. Integers stay integers and floats stay floats (orjson writes
``0.0`` as ``0.0`` and round-trips every finite double); non-finite numbers never reach the engine (ingest
rejects them).

>>> from propensity.features.offline import parse_features
>>> from propensity.features.online import OnlineFeatureEngine
>>> engine = OnlineFeatureEngine(parse_features([
...     {"name": "skus_7d", "aggregate": "count_distinct", "field": "sku", "window": "7d"}]))
>>> _ = engine.apply({"event_id": "e1", "customer_id": "c1", "event_type": "purchase", "event_time": 0,
...                   "available_at": 0, "sku": "a"})
>>> codec = StateCodec(engine.state_layout())
>>> state = engine.export_customer("c1")
>>> codec.decode(codec.encode_read(state), codec.encode_seen(state)) == state
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from propensity.features.online import CustomerState, StateLayout

FORMAT = 1
_EMPTY_SEEN = orjson.dumps([64, {}])


def _default(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return list(value)
    raise TypeError(f"cannot store a {type(value).__name__} in the online state")


class StateFormatError(ValueError):
    """Stored bytes that are not a state of this format (written by another version of propensity)."""


class StateCodec:
    """Encodes and decodes :class:`CustomerState` for engines with one feature plan (one ``state_layout``)."""

    def __init__(self, layout: Sequence[StateLayout]) -> None:
        self.layout = tuple(layout)
        # Only the states whose accumulators hold sets or tuples need their slots restored.
        self._fixed = tuple(
            (i, x.bucketed, x.set_slots, x.tuple_slots)
            for i, x in enumerate(self.layout)
            if x.set_slots or x.tuple_slots
        )
        self._bucketed = tuple(i for i, x in enumerate(self.layout) if x.bucketed)

    def encode_read(self, state: CustomerState) -> bytes:
        return orjson.dumps(
            [FORMAT, state.floor, state.aggs, state.sessions, state.pending, state.attrs],
            default=_default,
            option=orjson.OPT_NON_STR_KEYS,
        )

    @staticmethod
    def encode_seen(state: CustomerState) -> bytes:
        return orjson.dumps([state.seen_limit, state.seen])

    def decode(self, read: bytes, seen: bytes | None = None) -> CustomerState:
        """The state from its read part and (for applying) its seen part; without ``seen`` the state has no
        event ids, which is enough for reading features."""
        data = orjson.loads(read)
        if not isinstance(data, list) or len(data) != 6 or data[0] != FORMAT:
            raise StateFormatError(f"not an online state of format {FORMAT}")
        _, floor, aggs, sessions, pending, attrs = data
        if len(aggs) != len(self.layout):
            raise StateFormatError(
                f"{len(aggs)} aggregate states stored, the feature plan has {len(self.layout)}"
            )
        for i in self._bucketed:
            state = aggs[i]
            if state is not None:
                state[0] = {int(k): acc for k, acc in state[0].items()}
        for i, bucketed, set_slots, tuple_slots in self._fixed:
            state = aggs[i]
            if state is None:
                continue
            accs = [*state[0].values(), state[1]] if bucketed else [state]
            for acc in accs:
                for slot in set_slots:
                    if acc[slot] is not None:
                        acc[slot] = set(acc[slot])
                for slot in tuple_slots:
                    if acc[slot] is not None:
                        acc[slot] = tuple(acc[slot])
        sessions = [None if lst is None else list(map(tuple, lst)) for lst in sessions]
        if pending is not None:
            pending = list(map(tuple, pending))
        if attrs is not None:
            attrs = {name: list(map(tuple, versions)) for name, versions in attrs.items()}
        seen_limit, seen_ids = orjson.loads(seen if seen is not None else _EMPTY_SEEN)
        return CustomerState(floor, aggs, sessions, pending, seen_ids, seen_limit, attrs)
