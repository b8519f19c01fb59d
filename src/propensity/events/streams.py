"""Stream sources: events consumed from Kafka or a Redis stream, exactly once into the event log.

A :class:`StreamSource` is the small interface each transport honours (poll a batch, commit it, say the lag).
:class:`StreamConsumer` runs one: poll → validate (the bulk ingest's SQL) → durable in this process's spool
(:mod:`propensity.events.live`) → commit the offsets (Kafka) / ``XACK`` (Redis) → hand the new events on (to be
applied online). Offsets are committed only after the spool is fsync'd, so a crash anywhere loses nothing (what
was not committed is delivered again) and counts nothing twice (a redelivered event has the same ``event_id``,
derived from its content when the message has none, and is deduplicated by the log and the online store). Bad
messages go to the quarantine with their topic, partition and offset (or stream and entry id).

The transports: :class:`RedisStreamSource` here (``redis`` is a dependency of the Redis online store too) and
:class:`propensity.events.kafka.KafkaStreamSource` (``confluent-kafka``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from propensity.config.spec import EventSource
from propensity.core.errors import PropensityError
from propensity.events.live import LiveIngest, LiveResult, Origin

log = logging.getLogger(__name__)


class StreamError(PropensityError):
    """A stream source that cannot be reached or is misconfigured (the message names the setting)."""


@dataclass
class Message:
    value: bytes | str
    origin: Origin
    token: Any  # what commit() needs to acknowledge it


class StreamSource(Protocol):
    """What every stream transport offers."""

    name: str

    def poll(self, max_messages: int, timeout: float) -> list[Message]:
        """Up to ``max_messages`` messages, waiting up to ``timeout`` seconds for the first."""
        ...

    def commit(self, messages: Sequence[Message]) -> None:
        """Acknowledge ``messages`` (all durable): they will not be delivered again."""
        ...

    def lag(self) -> int | None:
        """Messages in the stream not yet committed by this group (None when unknown)."""
        ...

    def close(self) -> None: ...


@dataclass
class StreamStats:
    """A consumer's counters (exported on /metrics)."""

    source: str
    consumed: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    errors: int = 0
    batches: int = 0
    lag: int | None = None
    started: float = field(default_factory=time.time)
    last_batch_at: float | None = None

    def events_per_second(self) -> float:
        elapsed = time.time() - self.started
        return self.consumed / elapsed if elapsed > 0 else 0.0


class StreamConsumer:
    """Consume one source until :meth:`stop`: each batch durable, then committed, then handed to ``on_events``."""

    def __init__(
        self,
        source: StreamSource,
        event_source: EventSource,
        live: LiveIngest,
        *,
        on_events: Callable[[LiveResult], None] | None = None,
        max_batch: int = 5000,
        poll_timeout: float = 0.5,
    ) -> None:
        self.source = source
        self.event_source = event_source
        self.live = live
        self.on_events = on_events
        self.max_batch = max_batch
        self.poll_timeout = poll_timeout
        self.stats = StreamStats(event_source.name)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lag_checked = 0.0

    def step(self) -> int:
        """One batch: returns the messages handled (0 when the stream had none within the poll timeout)."""
        messages = self.source.poll(self.max_batch, self.poll_timeout)
        now = time.monotonic()
        if now - self._lag_checked > 1.0:  # a few broker round trips: at most once a second
            self._lag_checked = now
            try:
                self.stats.lag = self.source.lag()
            except Exception:  # lag is a gauge; never stop consuming for it
                log.debug("could not read the lag of %s", self.event_source.name, exc_info=True)
        if not messages:
            return 0
        result = self.live.accept_records(
            [m.value for m in messages], [m.origin for m in messages], self.event_source
        )
        self.source.commit(messages)  # only now: the batch is durable in the spool
        st = self.stats
        st.consumed += len(messages)
        st.accepted += result.accepted
        st.duplicates += result.duplicates
        st.quarantined += result.quarantined
        st.batches += 1
        st.last_batch_at = time.time()
        if self.on_events is not None and result.events.num_rows:
            self.on_events(result)
        return len(messages)

    def run(self) -> None:
        """Consume until :meth:`stop`; a failing batch is retried (it was not committed) after a pause."""
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:
                self.stats.errors += 1
                log.exception("stream %s: a batch failed; retrying", self.event_source.name)
                self._stop.wait(1.0)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"stream-{self.event_source.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.source.close()


def stats_metrics(consumers: Sequence[StreamConsumer]) -> str:
    """Prometheus text for stream consumers: consumed/accepted/duplicate/quarantined/errors counters, lag."""
    if not consumers:
        return ""
    rows = [
        (
            "propensity_stream_messages_total",
            "counter",
            "Messages consumed from a stream source.",
            "consumed",
        ),
        (
            "propensity_stream_events_accepted_total",
            "counter",
            "New events appended from a stream.",
            "accepted",
        ),
        (
            "propensity_stream_events_duplicate_total",
            "counter",
            "Stream events already in the log.",
            "duplicates",
        ),
        ("propensity_stream_quarantined_total", "counter", "Stream messages quarantined.", "quarantined"),
        ("propensity_stream_errors_total", "counter", "Stream batches that failed (retried).", "errors"),
    ]
    lines: list[str] = []
    for metric, kind, help_text, attr in rows:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} {kind}"]
        for c in consumers:
            lines.append(f'{metric}{{source="{c.stats.source}"}} {getattr(c.stats, attr)}')
    lines += ["# HELP propensity_stream_lag Messages not yet consumed (Kafka: per group, all partitions).",
              "# TYPE propensity_stream_lag gauge"]  # fmt: skip
    for c in consumers:
        if c.stats.lag is not None:
            lines.append(f'propensity_stream_lag{{source="{c.stats.source}"}} {c.stats.lag}')
    lines += ["# TYPE propensity_stream_events_per_second gauge"]
    for c in consumers:
        lines.append(
            f'propensity_stream_events_per_second{{source="{c.stats.source}"}} {c.stats.events_per_second():.1f}'
        )
    return "\n".join(lines) + "\n"


def setting_from_env(variable: str, what: str, source: str) -> str:
    value = os.environ.get(variable)
    if not value:
        raise StreamError(f"sources[{source}]: ${variable} is not set; it must hold the {what}")
    return value


def consumer_name(source: str) -> str:
    """A stable consumer name for this host and source (so a restarted consumer finds its pending entries)."""
    return os.environ.get("PROPENSITY_CONSUMER") or f"{socket.gethostname()}-{source}"


class RedisStreamSource:
    """A Redis stream read with a consumer group: ``XREADGROUP`` (own pending entries first after a restart, and
    entries of consumers idle for over ``claim_after`` seconds), ``XACK`` on commit."""

    def __init__(self, source: EventSource, *, url: str | None = None, claim_after: float = 60.0) -> None:
        import redis

        settings = source.redis_stream
        if settings is None:
            raise StreamError(f"sources[{source.name}] is not a redis_stream source")
        self.name = source.name
        self.stream = settings.stream
        self.group = settings.group
        self.field = settings.field
        self.consumer = consumer_name(source.name)
        self.claim_after_ms = int(claim_after * 1000)
        address = url or setting_from_env(settings.url_env, "Redis URL", source.name)
        self._redis: Any = redis.Redis.from_url(address, socket_timeout=30, socket_connect_timeout=5)
        try:
            self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise StreamError(f"sources[{source.name}]: cannot create group {self.group}: {exc}") from exc
        except redis.RedisError as exc:
            raise StreamError(f"sources[{source.name}]: Redis unreachable: {type(exc).__name__}") from exc
        self._pending_done = False  # after a restart: our own unacknowledged entries first
        self._last_claim = 0.0

    def _entry(self, entry_id: bytes, fields: dict[bytes, bytes]) -> Message:
        eid = entry_id.decode()
        if self.field is not None:
            value: bytes | str = fields.get(self.field.encode(), b"")
        else:
            import orjson

            value = orjson.dumps({k.decode(): v.decode() for k, v in fields.items()})
        origin = Origin(f"redis://{self.stream}", None, f"stream {self.stream} entry {eid}")
        return Message(value, origin, eid)

    def poll(self, max_messages: int, timeout: float) -> list[Message]:
        if not self._pending_done:
            got = self._redis.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=max_messages)
            entries = got[0][1] if got else []
            if entries:
                return [self._entry(i, f) for i, f in entries if f]
            self._pending_done = True
        now = time.monotonic()
        if now - self._last_claim > self.claim_after_ms / 1000:
            self._last_claim = now
            claimed = self._redis.xautoclaim(
                self.stream, self.group, self.consumer, self.claim_after_ms, "0-0", count=max_messages
            )
            entries = claimed[1] if claimed else []
            if entries:
                return [self._entry(i, f) for i, f in entries if f]
        got = self._redis.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: ">"},
            count=max_messages,
            block=max(1, int(timeout * 1000)),
        )
        return [self._entry(i, f) for i, f in got[0][1]] if got else []

    def commit(self, messages: Sequence[Message]) -> None:
        if messages:
            self._redis.xack(self.stream, self.group, *[m.token for m in messages])

    def lag(self) -> int | None:
        for group in self._redis.xinfo_groups(self.stream):
            name = group.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == self.group:
                lag = group.get("lag")
                pending = int(group.get("pending") or 0)
                return None if lag is None else int(lag) + pending
        return None

    def close(self) -> None:
        self._redis.close()


def open_stream(source: EventSource, **options: Any) -> StreamSource:
    """The transport of a declared stream source."""
    if source.redis_stream is not None:
        return RedisStreamSource(source, **options)
    if source.kafka is not None:
        from propensity.events.kafka import KafkaStreamSource

        return KafkaStreamSource(source, **options)
    raise StreamError(f"sources[{source.name}] is not a stream (give it kafka: or redis_stream:)")
