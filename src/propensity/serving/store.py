"""The online feature store: the state that answers "this customer's features, now" in microseconds.

:class:`OnlineStore` is the small interface every backend honours (in-process now; Redis, to share state between
server processes: :class:`propensity.serving.redis_store.RedisStore`). :class:`InMemoryStore` is the reference implementation: it wraps the online feature
engine (:class:`propensity.features.online.OnlineFeatureEngine`) and is rebuilt from the event log at start.
It lives here rather than in ``features/`` because it is a serving concern (what a server holds and shares); the
feature semantics stay in the engine, which both backends will use.

>>> from datetime import datetime, timezone
>>> from propensity.features.offline import parse_features
>>> store = InMemoryStore(parse_features([
...     {"name": "purchases_7d", "aggregate": "count", "event_type": "purchase", "window": "7d"}]))
>>> t0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
>>> store.apply_one({"event_id": "e1", "customer_id": "c1", "event_type": "purchase", "event_time": t0,
...                  "available_at": t0})
True
>>> store.knows("c1"), store.knows("c2")
(True, False)
>>> store.vector("c1", datetime(2024, 1, 2, tzinfo=timezone.utc))
(1,)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

import duckdb
import pyarrow as pa

from propensity.config.features import AnyFeature
from propensity.core.errors import PropensityError
from propensity.features.online import OnlineFeatureEngine


class StoreUnavailableError(PropensityError):
    """The store's backend (Redis) cannot be reached or answered with an error; the request may be retried."""


@runtime_checkable
class OnlineStore(Protocol):
    """What every online store backend offers. Timestamps: tz-aware datetimes or epoch microseconds."""

    @property
    def feature_names(self) -> tuple[str, ...]: ...

    @property
    def version(self) -> str: ...

    def apply(self, events: pa.Table) -> int:
        """Take events (the event log's columns) in; returns how many were new (duplicates are ignored)."""
        ...

    def apply_attributes(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Take attribute versions (customer_id, attribute, value, valid_from, available_at, source); returns
        how many were taken."""
        ...

    def vector(self, customer_id: str, as_of: datetime | int | None = None) -> tuple[Any, ...]:
        """The customer's features as of ``as_of`` (default now), in ``feature_names`` order; an unknown
        customer gets the empty vector (counts 0, the rest null)."""
        ...

    def vectors(
        self, customer_ids: Sequence[str], as_of: datetime | int | None = None
    ) -> list[tuple[Any, ...]]:
        """:meth:`vector` of several customers at one time (a backend may fetch them in one round trip)."""
        ...

    def knows(self, customer_id: str) -> bool:
        """Whether any event or attribute of this customer has been applied (False means a cold start)."""
        ...

    def rebuild(self, con: duckdb.DuckDBPyConnection) -> int:
        """Replay the event log (a connection to the workspace database) into the store; returns events applied."""
        ...


class InMemoryStore:
    """The in-process store: one :class:`OnlineFeatureEngine` in this process's memory. Not thread-safe: the
    server calls it from its event loop only."""

    def __init__(self, features: Sequence[AnyFeature] | OnlineFeatureEngine) -> None:
        self.engine = features if isinstance(features, OnlineFeatureEngine) else OnlineFeatureEngine(features)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.engine.feature_names

    @property
    def version(self) -> str:
        return str(self.engine.version)

    def apply(self, events: pa.Table) -> int:
        return self.engine.apply_batch(events)

    def apply_one(self, event: Mapping[str, Any]) -> bool:
        return self.engine.apply(event)

    def vector(self, customer_id: str, as_of: datetime | int | None = None) -> tuple[Any, ...]:
        return self.engine.vector(customer_id, as_of, at_floor=True)

    def apply_attributes(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Take attribute versions (customer_id, attribute, value, valid_from, available_at, source)."""
        for row in rows:
            self.engine.apply_attribute(row)
        return len(rows)

    def replace_attribute_source(self, source: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Forget the versions of one attribute source and take its rows now (a reload replaced them)."""
        return self.engine.replace_attribute_source(source, rows)

    def vectors(
        self, customer_ids: Sequence[str], as_of: datetime | int | None = None
    ) -> list[tuple[Any, ...]]:
        return [self.vector(c, as_of) for c in customer_ids]

    def knows(self, customer_id: str) -> bool:
        return customer_id in self.engine

    def rebuild(self, con: duckdb.DuckDBPyConnection) -> int:
        return self.engine.rebuild(con)

    @property
    def customers(self) -> int:
        return self.engine.customers
