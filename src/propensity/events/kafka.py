"""Kafka as a stream source (``confluent-kafka``, librdkafka): a consumer group, offsets committed by hand only
after the batch is durable (see :mod:`propensity.events.streams`).

Any Kafka-protocol cluster works (Apache Kafka, Confluent, Redpanda, MSK, ...): give the servers in the
environment variable the source names (``bootstrap_servers_env``, default ``KAFKA_BOOTSTRAP_SERVERS``) and any
client settings under ``options`` (``security.protocol: SASL_SSL``, ``sasl.password: env:KAFKA_PASSWORD``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from propensity.config.spec import EventSource
from propensity.events.live import Origin
from propensity.events.streams import Message, StreamError, consumer_name, setting_from_env


def _options(options: dict[str, str], source: str) -> dict[str, str]:
    out = {}
    for key, value in options.items():
        if value.startswith("env:"):
            value = setting_from_env(value[4:], f"value of {key}", source)
        out[key] = value
    return out


class KafkaStreamSource:
    """One topic, one consumer group; manual commits of the next offset per partition."""

    def __init__(self, source: EventSource, *, bootstrap_servers: str | None = None) -> None:
        try:
            from confluent_kafka import Consumer
        except ImportError as exc:  # pragma: no cover - installed with the kafka extra
            raise StreamError("Kafka sources need confluent-kafka: pip install 'propensity[kafka]'") from exc
        settings = source.kafka
        if settings is None:
            raise StreamError(f"sources[{source.name}] is not a kafka source")
        self.name = source.name
        self.topic = settings.topic
        servers = bootstrap_servers or setting_from_env(
            settings.bootstrap_servers_env, "Kafka bootstrap servers", source.name
        )
        config: dict[str, Any] = {
            "bootstrap.servers": servers,
            "group.id": settings.group,
            "client.id": consumer_name(source.name),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": settings.start,
            "fetch.wait.max.ms": 100,
            # A consumer killed without leaving the group holds its partitions until this expires.
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 2_000,
            "queued.min.messages": 200_000,
            **_options(settings.options, source.name),
        }
        self._consumer = Consumer(config)
        self._consumer.subscribe([self.topic])

    def poll(self, max_messages: int, timeout: float) -> list[Message]:
        out = []
        # librdkafka's consume() waits for a full batch or the timeout: a short wait keeps a trickle of events
        # flowing at once (~20 ms), while a busy topic still fills the batch.
        for msg in self._consumer.consume(max_messages, min(timeout, 0.02)):
            error = msg.error()
            if error is not None:
                if error.code() == -191:  # _PARTITION_EOF: not an error
                    continue
                raise StreamError(f"Kafka: {error.str()}")
            partition, offset = msg.partition(), msg.offset()
            origin = Origin(
                f"kafka://{self.topic}/{partition}",
                offset,
                f"topic {self.topic} partition {partition} offset {offset}",
            )
            out.append(Message(msg.value() or b"", origin, (partition, offset)))
        return out

    def commit(self, messages: Sequence[Message]) -> None:
        from confluent_kafka import TopicPartition

        nxt: dict[int, int] = {}
        for m in messages:
            partition, offset = m.token
            nxt[partition] = max(nxt.get(partition, -1), offset + 1)
        if nxt:
            self._consumer.commit(
                offsets=[TopicPartition(self.topic, p, o) for p, o in nxt.items()], asynchronous=False
            )

    def lag(self) -> int | None:
        """Messages of the topic (every partition, not only those assigned here: a partition still held by a
        consumer that died is not done) past the group's committed offsets."""
        from confluent_kafka import TopicPartition

        topic = self._consumer.list_topics(self.topic, timeout=5).topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            return None
        partitions = [TopicPartition(self.topic, p) for p in sorted(topic.partitions)]
        total = 0
        for tp in self._consumer.committed(partitions, timeout=5):
            low, high = self._consumer.get_watermark_offsets(tp, timeout=5, cached=False)
            done = tp.offset if tp.offset >= 0 else low
            total += max(0, high - done)
        return total

    def close(self) -> None:
        self._consumer.close()
