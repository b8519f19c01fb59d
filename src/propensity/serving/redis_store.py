"""The Redis online store: the online engine's per-customer state in Redis, shared by every server process.

Each customer's state (:class:`~propensity.features.online.CustomerState`, encoded by
:mod:`propensity.serving.state_codec`) lives in one hash; the features are computed by the same
:class:`~propensity.features.online.OnlineFeatureEngine` code as in memory, so both stores give the same values.
A read is one ``HMGET`` and a decode; an apply reads every touched customer in one pipelined round trip, applies
the events with the engine, and writes each state back with a compare-and-set on its version (a Lua script),
retrying the customers whose state another process changed in between, so no concurrent apply is lost.

Keys, with ``P`` = ``{prefix}:{feature_set_version}`` (a new feature set starts from an empty namespace):

* ``P:c:{customer_id}``: a hash, ``v`` (version), ``r`` (read part of the state), ``s`` (deduplication ids);
* ``P:meta``: a hash, ``ready`` (the log has been loaded), ``watermark`` (greatest ``ingested_at`` loaded from the
  log, epoch µs), ``live_watermark`` (greatest ``ingested_at`` of live events applied by any server),
  ``customers`` (how many customer keys exist);
* ``P:lock``: held (with an expiry) by the one process loading or catching up from the log.

Not thread-safe (like :class:`~propensity.serving.store.InMemoryStore`): a server calls it from its event loop.
Several processes may share one Redis freely.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from propensity.config.features import AnyFeature, AttributeFeature
from propensity.events.live import LIVE_SOURCE
from propensity.features.online import OnlineFeatureEngine, to_micros
from propensity.serving.redis_wire import Breaker, RedisWire
from propensity.serving.state_codec import StateCodec
from propensity.serving.store import StoreUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")

POOL_SIZE = 2  # blocking connections per process, for writes (one apply at a time) and loads
COUNT_EVERY_S = 5.0  # how often reads refresh the customer count shown on /metrics
MAX_ATTEMPTS = 50  # compare-and-set rounds for one batch before giving up (only under extreme contention)
MAX_OWED_ROWS = 1_000_000  # live events held in memory while Redis is away, to apply once it is back
LOCK_SECONDS = 60  # the loader's lock expiry; refreshed while it works, so a crashed loader frees it soon
WRITE_CHUNK = 1000  # customers per pipelined round trip when loading

# Write a customer's state only if its version is still the one read ("0": no state yet).
# KEYS: customer key, meta key. ARGV: expected version, new version, read part, seen part ("" to keep it).
_CAS = """
local v = redis.call('HGET', KEYS[1], 'v')
if (v or '0') ~= ARGV[1] then return 0 end
if ARGV[4] == '' then
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 'r', ARGV[3])
else
  redis.call('HSET', KEYS[1], 'v', ARGV[2], 'r', ARGV[3], 's', ARGV[4])
end
if ARGV[1] == '0' then redis.call('HINCRBY', KEYS[2], 'customers', 1) end
return 1
"""
# Write a customer's state whatever is there, bumping the version (so a concurrent compare-and-set retries on top).
# KEYS: customer key, meta key. ARGV: read part, seen part.
_PUT = """
if redis.call('HINCRBY', KEYS[1], 'v', 1) == 1 then redis.call('HINCRBY', KEYS[2], 'customers', 1) end
redis.call('HSET', KEYS[1], 'r', ARGV[1], 's', ARGV[2])
return 1
"""
# Raise a watermark field of the meta hash to ARGV[2] if that is greater. KEYS: meta key. ARGV: field, value.
_RAISE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (not cur) or tonumber(ARGV[2]) > tonumber(cur) then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return 1
"""
_REFRESH = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
_UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class RedisStore:
    """An :class:`~propensity.serving.store.OnlineStore` in Redis (``redis://``, ``rediss://`` or ``unix://``).

    Redis errors surface as :class:`~propensity.serving.store.StoreUnavailableError` (the server answers 503);
    live events whose apply failed are kept and applied first once Redis answers again.
    """

    def __init__(
        self,
        features: Sequence[AnyFeature] | OnlineFeatureEngine,
        url: str,
        *,
        prefix: str = "propensity",
        timeout: float = 1.0,
        pool_size: int = POOL_SIZE,
    ) -> None:
        # Scratch engines holding only the customers of the apply (``engine``, worker threads, one at a time) or
        # the read (``_reader``, the event loop) in progress.
        self.engine = features if isinstance(features, OnlineFeatureEngine) else OnlineFeatureEngine(features)
        self._reader = OnlineFeatureEngine(self.engine.plan)
        self.url = redacted(url)
        self.prefix = prefix
        self.timeout = timeout
        self._codec = StateCodec(self.engine.state_layout())
        # After a failure, calls fail at once for `timeout` seconds, then one trial goes through.
        self.breaker = Breaker(cooldown=timeout)
        # Writes and loads (worker threads): redis-py, hiredis parsing, a small blocking pool. Typed loosely:
        # redis-py's stubs do not model replies (bytes here: decode_responses is off).
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=pool_size,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
        )
        # One retry (a connection broken by a Redis restart), not redis-py's default ten with backoff: a call
        # must fail fast (503) rather than hold a request while Redis is away.
        self._redis: Any = redis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 1))
        # Reads (the event loop): one pipelined connection with a deadline per command.
        self._wire = RedisWire(url, timeout=timeout, breaker=self.breaker,
                               describe=lambda doing: self._message(doing))  # fmt: skip
        self._base = f"{prefix}:{self.engine.version}"
        self._meta = f"{self._base}:meta"
        self._lock = f"{self._base}:lock"
        self._cas = self._redis.register_script(_CAS)
        self._put = self._redis.register_script(_PUT)
        self._raise = self._redis.register_script(_RAISE)
        self._refresh = self._redis.register_script(_REFRESH)
        self._unlock = self._redis.register_script(_UNLOCK)
        self._known: dict[str, bool] = {}  # vector()'s finding for knows() right after it (consumed once)
        self._owed: list[pa.Table] = []
        self._owed_rows = 0
        self._customers = 0
        self._counted_at = 0.0
        self._applying = threading.RLock()

    apply_blocks = True  # the server applies events in a worker thread and reads with aread()

    # ------------------------------------------------------------------------------------------ protocol

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.engine.feature_names

    @property
    def version(self) -> str:
        return str(self.engine.version)

    def key(self, customer_id: str) -> str:
        return f"{self._base}:c:{customer_id}"

    def vector(self, customer_id: str, as_of: datetime | int | None = None) -> tuple[Any, ...]:
        if self._owed:
            self._settle()
        with self._unavailable("read features"):
            version, read = self._redis.hmget(self.key(customer_id), ("v", "r"))
        return self._read(customer_id, version, read, as_of, self._persist)

    def vectors(
        self, customer_ids: Sequence[str], as_of: datetime | int | None = None
    ) -> list[tuple[Any, ...]]:
        """:meth:`vector` of several customers, fetched in one pipelined round trip."""
        if self._owed:
            self._settle()
        if as_of is None:
            as_of = datetime.now(UTC)  # one time for all of them
        with self._unavailable("read features"):
            pipe = self._redis.pipeline(transaction=False)
            for cid in customer_ids:
                pipe.hmget(self.key(cid), ("v", "r"))
            stored = pipe.execute()
        return [
            self._read(c, v, r, as_of, self._persist) for c, (v, r) in zip(customer_ids, stored, strict=True)
        ]

    async def aread(
        self, customer_id: str, as_of: datetime | int | None = None
    ) -> tuple[tuple[Any, ...], bool]:
        """The customer's features and whether the store knows them, in one round trip that never blocks the
        event loop (a hung Redis fails it within ``timeout``; see :mod:`propensity.serving.redis_wire`)."""
        if self._owed:
            await asyncio.to_thread(self._settle)
        version, read = await self._wire.call(b"HMGET", self.key(customer_id), b"v", b"r")
        self._count_now_and_then()
        return self._read(customer_id, version, read, as_of, self._persist_nowait), read is not None

    async def aread_many(
        self, customer_ids: Sequence[str], as_of: datetime | int | None = None
    ) -> tuple[list[tuple[Any, ...]], list[bool]]:
        """:meth:`aread` of several customers, in one round trip."""
        if self._owed:
            await asyncio.to_thread(self._settle)
        if as_of is None:
            as_of = datetime.now(UTC)
        stored = await self._wire.call_many([(b"HMGET", self.key(c), b"v", b"r") for c in customer_ids])
        vectors = [self._read(c, v, r, as_of, self._persist_nowait)
                   for c, (v, r) in zip(customer_ids, stored, strict=True)]  # fmt: skip
        return vectors, [r is not None for _, r in stored]

    def _read(
        self,
        customer_id: str,
        version: bytes | None,
        read: bytes | None,
        as_of: datetime | int | None,
        persist: Callable[[str, int, bytes], None],
    ) -> tuple[Any, ...]:
        if len(self._known) > 4096:
            self._known.clear()
        self._known[customer_id] = read is not None
        engine = self._reader
        if read is None:
            return engine.vector(customer_id, as_of)  # the empty vector
        state = self._codec.decode(read)
        engine.import_customer(customer_id, state)
        try:
            out = engine.vector(customer_id, as_of, at_floor=True)
            if state.pending:
                after = engine.export_customer(customer_id)
                assert after is not None
                if after.pending is not state.pending:
                    # The read took pending (future-dated) events in, as the in-memory engine does; keep that,
                    # so both stores hold the same state. Losing this race is harmless: the winner's state is
                    # valid.
                    persist(customer_id, int(version or 0), self._codec.encode_read(after))
        finally:
            engine.drop_customer(customer_id)
        return out

    def _persist(self, customer_id: str, version: int, read: bytes) -> None:
        with self._unavailable("write features"):
            self._cas(keys=[self.key(customer_id), self._meta], args=[version, version + 1, read, ""])

    def _persist_nowait(self, customer_id: str, version: int, read: bytes) -> None:
        self._wire.send_nowait(
            b"EVAL", _CAS, 2, self.key(customer_id), self._meta, version, version + 1, read, b""
        )

    def _count_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._counted_at > COUNT_EVERY_S:
            self._counted_at = now
            self._wire.send_nowait(b"HGET", self._meta, b"customers", then=self._counted)

    def _counted(self, reply: Any) -> None:
        self._customers = int(reply or 0)

    def knows(self, customer_id: str) -> bool:
        known = self._known.pop(customer_id, None)
        if known is None:
            with self._unavailable("read features"):
                known = bool(self._redis.exists(self.key(customer_id)))
        return known

    def apply(self, events: pa.Table) -> int:
        """Apply live events (the log's columns); returns how many were new. If Redis is away the batch is kept
        and applied before anything else once it is back, and :class:`StoreUnavailableError` is raised."""
        if events.num_rows == 0:
            return 0
        with self._applying:
            try:
                self._settle()
                with self._unavailable("apply events"):
                    applied = self._apply_events(events)
                    self._raise_watermark("live_watermark", events)
                    self._customers = int(self._redis.hget(self._meta, "customers") or 0)
            except StoreUnavailableError:
                self._owe(events)
                raise
        return applied

    def rebuild(self, con: duckdb.DuckDBPyConnection) -> int:
        """Bring the store up to date with the event log: load it whole into an empty store, or else apply only
        what was ingested after the store's watermarks. One process at a time (a lock in Redis); another one
        starting meanwhile waits, then finds nothing or little to do. Returns the events applied.

        Call it holding the workspace's write lock (as :func:`propensity.serving.startup.build_service` does):
        a load replaces the states found in an unloaded namespace (say, written by running servers after Redis
        came back empty), which is right only if no event can be appended to the log meanwhile."""
        token = uuid.uuid4().hex
        with self._unavailable("load the event log"):
            waited = False
            while not self._redis.set(self._lock, token, nx=True, ex=LOCK_SECONDS):
                if not waited:
                    log.info("another process is loading the online store in %s; waiting", self.url)
                    waited = True
                time.sleep(0.1)
            try:
                meta = self._redis.hgetall(self._meta)
                if meta.get(b"ready") == b"1":
                    applied = self._catch_up(con, meta, token)
                else:
                    applied = self._load(con, token)
                self._customers = int(self._redis.hget(self._meta, "customers") or 0)
            finally:
                self._unlock(keys=[self._lock], args=[token])
        return applied

    @property
    def customers(self) -> int:
        """Customers with a state in Redis, as last seen (refreshed by applies, and by reads every few seconds;
        never a call to Redis, so a metrics scrape cannot hang on it)."""
        return self._customers

    def count_customers(self) -> int:
        """Customers with a state in Redis, asked of Redis now (blocking)."""
        with self._unavailable("count customers"):
            self._customers = int(self._redis.hget(self._meta, "customers") or 0)
        return self._customers

    def close(self) -> None:
        self._wire.close()
        self._redis.close()

    # ---------------------------------------------------------------------------------------- applying

    def _apply_events(self, events: pa.Table) -> int:
        """Apply an events table customer by customer (each customer's rows in their given order)."""
        order = pc.sort_indices(events.column("customer_id"))  # stable: keeps each customer's order
        events = events.take(order)
        ids = events.column("customer_id").to_pylist()
        slices: dict[str, pa.Table] = {}
        start = 0
        for i in range(1, len(ids) + 1):
            if i == len(ids) or ids[i] != ids[start]:
                slices[str(ids[start])] = events.slice(start, i - start)
                start = i
        return self._transact(slices, self.engine.apply_batch)

    def apply_attributes(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Apply attribute versions (customer_id, attribute, value, valid_from, available_at[, source]), as
        :meth:`OnlineFeatureEngine.apply_attribute` does; returns how many were taken."""
        by_customer: dict[str, list[Mapping[str, Any]]] = {}
        for row in rows:
            by_customer.setdefault(str(row["customer_id"]), []).append(row)

        def apply(versions: list[Mapping[str, Any]]) -> int:
            for row in versions:
                self.engine.apply_attribute(row)
            return len(versions)

        return self._transact(by_customer, apply)

    def _transact(self, work: Mapping[str, T], apply: Callable[[T], int]) -> int:
        """Per customer: read the state, ``apply(work[customer])`` to it in the scratch engine, write it back if
        the stored version is unchanged; repeat for the customers that lost a race. Returns the sum of the
        counts of the writes that landed."""
        engine, codec = self.engine, self._codec
        todo = list(work)
        total = 0
        for _ in range(MAX_ATTEMPTS):
            pipe = self._redis.pipeline(transaction=False)
            for cid in todo:
                pipe.hmget(self.key(cid), ("v", "r", "s"))
            stored = pipe.execute()
            writes: list[tuple[str, int, int]] = []
            pipe = self._redis.pipeline(transaction=False)
            for cid, (version, read, seen) in zip(todo, stored, strict=True):
                if read is not None:
                    engine.import_customer(cid, codec.decode(read, seen))
                try:
                    n = apply(work[cid])
                    state = engine.export_customer(cid)
                    if n and state is not None:
                        v = int(version or 0)
                        args: list[Any] = [v, v + 1, codec.encode_read(state), codec.encode_seen(state)]
                        self._cas(keys=[self.key(cid), self._meta], args=args, client=pipe)
                        writes.append((cid, v, n))
                finally:
                    engine.drop_customer(cid)
            if not writes:
                break
            lost = []
            for (cid, _, n), ok in zip(writes, pipe.execute(), strict=True):
                if ok:
                    total += n
                else:
                    lost.append(cid)
            if not lost:
                break
            todo = lost
        else:
            raise redis.RedisError(
                f"{len(todo)} customers changed concurrently {MAX_ATTEMPTS} times in a row"
            )
        return total

    def _raise_watermark(self, field: str, events: pa.Table) -> None:
        column = "ingested_at" if "ingested_at" in events.column_names else "available_at"
        latest = pc.max(events.column(column)).as_py()
        if latest is not None:
            self._raise(keys=[self._meta], args=[field, to_micros(latest)])

    def advance_watermark(self, ingested_at_us: int) -> None:
        """Record that every event of the log ingested up to this time has been applied (a server's sync applies
        what others appended), so the next start does not apply it again."""
        with self._unavailable("record the watermark"):
            for field in ("watermark", "live_watermark"):
                self._raise(keys=[self._meta], args=[field, int(ingested_at_us)])

    def _owe(self, events: pa.Table) -> None:
        if self._owed_rows + events.num_rows > MAX_OWED_ROWS:
            log.error(
                "Redis has been unavailable for %d live events; dropping this batch from the retry queue "
                "(it is in the event log: restart a server to load it)", self._owed_rows,
            )  # fmt: skip
            return
        self._owed.append(events)
        self._owed_rows += events.num_rows

    def _settle(self) -> None:
        """Apply the live events kept while Redis was away, oldest first."""
        with self._applying:
            while self._owed:
                batch = self._owed[0]
                with self._unavailable("apply events kept while Redis was away"):
                    self._apply_events(batch)
                    self._raise_watermark("live_watermark", batch)
                self._owed.pop(0)
                self._owed_rows -= batch.num_rows
                log.info("applied %d live events kept while Redis was away", batch.num_rows)

    # -------------------------------------------------------------------------------- loading the log

    def _load(self, con: duckdb.DuckDBPyConnection, token: str) -> int:
        """An empty store: rebuild in memory with the engine, then write every customer in pipelined chunks."""
        watermark = _log_watermark(con)
        scratch = OnlineFeatureEngine(self.engine.plan)
        applied = scratch.rebuild(con)
        customers = self.load_engine(
            scratch, after_chunk=lambda: self._refresh(keys=[self._lock], args=[token, LOCK_SECONDS * 1000])
        )
        mapping = {"ready": "1", "format": "1", "loaded_at": str(int(time.time() * 1e6))}
        self._redis.hset(self._meta, mapping=mapping)
        if watermark is not None:
            for field in ("watermark", "live_watermark"):
                self._raise(keys=[self._meta], args=[field, watermark])
        log.info("online store loaded into Redis: %d events, %d customers", applied, customers)
        return applied

    def load_engine(
        self, engine: OnlineFeatureEngine, *, after_chunk: Callable[[], None] | None = None
    ) -> int:
        """Write every customer an in-memory engine of the same feature set holds into this store, replacing
        any state held here, in pipelined chunks, emptying the engine as it goes (a bulk load). Only correct if
        the engine has taken in every event the stored states hold (true of a rebuild from the log made while
        no event can be appended: :meth:`rebuild`'s caller holds the workspace lock). Returns the customers
        written."""
        if engine.version != self.engine.version:
            raise ValueError(
                f"feature set {engine.version} cannot be loaded into a store of {self.engine.version}"
            )
        codec = self._codec
        ids = engine.customer_ids()
        for start in range(0, len(ids), WRITE_CHUNK):
            pipe = self._redis.pipeline(transaction=False)
            for cid in ids[start : start + WRITE_CHUNK]:
                state = engine.export_customer(cid)
                assert state is not None
                args: list[Any] = [codec.encode_read(state), codec.encode_seen(state)]
                self._put(keys=[self.key(cid), self._meta], args=args, client=pipe)
                engine.drop_customer(cid)  # free memory as we go
            pipe.execute()
            if after_chunk is not None:
                after_chunk()
        return len(ids)

    def _catch_up(self, con: duckdb.DuckDBPyConnection, meta: Mapping[bytes, bytes], token: str) -> int:
        """Apply what the log holds beyond the watermarks: events ingested by the CLI since the last load (all
        sources) and live events no server applied (source ``api``, e.g. a server stopped between append and
        apply)."""
        watermark = int(meta.get(b"watermark", -1))
        live = max(int(meta.get(b"live_watermark", -1)), watermark)
        latest = _log_watermark(con)
        if latest is None or latest <= watermark:
            return 0
        source = LIVE_SOURCE.name.replace("'", "''")
        relation = cast(Any, con).sql(
            "SELECT * FROM events WHERE "
            f"(source = '{source}' AND epoch_us(ingested_at) > {live}) "
            f"OR (source IS DISTINCT FROM '{source}' AND epoch_us(ingested_at) > {watermark}) "
            "ORDER BY available_at, event_id"
        )
        reader = relation.to_arrow_reader(50_000)
        applied = 0
        for batch in reader:
            applied += self._apply_events(pa.Table.from_batches([batch]))
            self._refresh(keys=[self._lock], args=[token, LOCK_SECONDS * 1000])
        names = sorted({f.attribute for f in self.engine.plan.features if isinstance(f, AttributeFeature)})
        if names:
            quoted = ", ".join("'" + n.replace("'", "''") + "'" for n in names)
            rows = con.execute(
                "SELECT customer_id, attribute, value, source, epoch_us(valid_from) AS valid_from, "
                "epoch_us(available_at) AS available_at FROM attributes "
                f"WHERE epoch_us(ingested_at) > {watermark} AND attribute IN ({quoted}) ORDER BY available_at"
            ).fetchall()
            columns = ("customer_id", "attribute", "value", "source", "valid_from", "available_at")
            self.apply_attributes([dict(zip(columns, row, strict=True)) for row in rows])
        for field in ("watermark", "live_watermark"):
            self._raise(keys=[self._meta], args=[field, latest])
        log.info("online store in Redis caught up with %d events from the log", applied)
        return applied

    # --------------------------------------------------------------------------------------------- errors

    def _message(self, doing: str) -> str:
        return f"the online store (Redis at {self.url}) is unavailable: could not {doing}; retry shortly"

    @contextmanager
    def _unavailable(self, doing: str) -> Iterator[None]:
        """Redis calls inside fail as :class:`StoreUnavailableError`, at once while the breaker is open."""
        if not self.breaker.allow():
            raise StoreUnavailableError(self._message(f"{doing} (Redis did not answer recently)"))
        ok = False
        try:
            yield
            ok = True
        except redis.RedisError as exc:
            self.breaker.failure()
            raise StoreUnavailableError(self._message(f"{doing} ({type(exc).__name__})")) from exc
        finally:
            if ok:
                self.breaker.success()
            else:
                self.breaker.release()


def _log_watermark(con: duckdb.DuckDBPyConnection) -> int | None:
    """The greatest ``ingested_at`` in the log (events and attributes), epoch µs; None for an empty log."""
    (latest,) = con.execute(
        "SELECT max(t) FROM (SELECT epoch_us(max(ingested_at)) AS t FROM events "
        "UNION ALL SELECT epoch_us(max(ingested_at)) FROM attributes)"
    ).fetchall()[0]
    return None if latest is None else int(latest)
