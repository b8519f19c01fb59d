"""Stream sources against real brokers (Kafka through Tansu, Redis Streams through redis-server), one suite for
both: every valid message lands in the log once, bad ones in the quarantine with where they came from, the lag
returns to zero, and `propensity stream` killed with -9 at random moments loses nothing and counts nothing twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from tests.conftest import write_spec
from tests.services import KafkaBroker, RedisServer

from propensity.events.log import DuckDBEventLog, open_event_log
from propensity.serving.streaming import run_streams, stream_sources
from propensity.workspace import Workspace

pytestmark = pytest.mark.service


@dataclass
class Broker:
    """One transport behind the same three calls: the spec of a source, produce, and the env a consumer needs."""

    kind: str
    name: str  # topic or stream key
    env: dict[str, str]
    _kafka: KafkaBroker | None = None
    _redis: RedisServer | None = None

    def source_yaml(self) -> str:
        if self.kind == "kafka":
            return f"kafka: {{topic: {self.name}, group: g-{self.name}}}"
        return f"redis_stream: {{stream: {self.name}, group: g-{self.name}}}"

    def produce(self, values: list[bytes]) -> None:
        if self._kafka is not None:
            self._kafka.produce(self.name, values)
            return
        assert self._redis is not None
        r = redis.Redis.from_url(self._redis.url)
        pipe = r.pipeline(transaction=False)
        for v in values:
            pipe.xadd(self.name, {"event": v})
        pipe.execute()


@pytest.fixture(params=["kafka", "redis"])
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    name = f"ev{uuid.uuid4().hex[:8]}"
    if request.param == "kafka":
        kafka: KafkaBroker = request.getfixturevalue("kafka_broker")
        kafka.create_topic(name, partitions=2)
        yield Broker("kafka", name, {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap}, _kafka=kafka)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        yield Broker("redis", name, {"REDIS_URL": server.url}, _redis=server)


def _spec(tmp: Path, broker: Broker) -> Workspace:
    return write_spec(tmp, f"sources:\n  - name: web\n    {broker.source_yaml()}\n")


def _event(i: int, *, with_id: bool = True) -> bytes:
    e: dict[str, Any] = {"customer_id": f"c{i % 17}", "event_type": "page_view",
                         "event_time": f"2025-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z", "n": i}  # fmt: skip
    if with_id:
        e["event_id"] = f"s{i}"
    return orjson.dumps(e)


def _log(ws: Workspace) -> tuple[list[Any], list[Any]]:
    with open_event_log(ws).connection(
        read_only=True
    ) as con:  # either event store (tests/events/conftest.py)
        ids = con.execute("SELECT event_id, source FROM events").fetchall()
        quarantine = con.execute(
            "SELECT source, source_file, row_number, reason, detail FROM quarantine"
        ).fetchall()
    return ids, quarantine


def test_a_stream_lands_once_with_bad_messages_quarantined(tmp_path: Path, broker: Broker,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    for k, v in broker.env.items():
        monkeypatch.setenv(k, v)
    ws = _spec(tmp_path, broker)
    good = [_event(i, with_id=i % 2 == 0) for i in range(300)]
    bad = [b"{oops", b'{"customer_id": "c1", "event_type": "teleport", "event_time": "2025-01-01T00:00:00Z"}']
    broker.produce(good[:150] + bad + good[150:] + good[:10])  # the last ten again: redelivered duplicates
    run = run_streams(ws, stream_sources(ws), until_idle=1.0, max_seconds=120, fsync=False)
    (stats,) = run.stats
    assert (stats.consumed, stats.accepted, stats.duplicates, stats.quarantined) == (312, 300, 10, 2)
    assert stats.lag == 0
    ids, quarantine = _log(ws)
    assert len(ids) == 300 and len({i for i, _ in ids}) == 300 and {s for _, s in ids} == {"web"}
    assert sorted(q[3].split(":")[0] for q in quarantine) == ["event_type", "record"]
    where = "topic" if broker.kind == "kafka" else "stream"
    assert all(q[0] == "web" and q[4].startswith(where) for q in quarantine)
    if broker.kind == "kafka":
        assert all(q[1].startswith(f"kafka://{broker.name}/") and q[2] is not None for q in quarantine)
    # A second run finds nothing new: the offsets were committed.
    again = run_streams(ws, stream_sources(ws), until_idle=0.5, max_seconds=60, fsync=False)
    assert again.stats[0].consumed == 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "event_storage", ["duckdb"], indirect=True
)  # the transports matter here, not the store
def test_kill_9_of_the_consumer_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, broker: Broker
) -> None:
    ws = _spec(tmp_path, broker)
    n = 10000
    broker.produce([_event(i, with_id=i % 3 != 0) for i in range(n)])
    env = {**os.environ, **broker.env}
    rng = random.Random(11)
    spool = DuckDBEventLog(ws.db_path).spool_dir
    for _ in range(2):
        proc = subprocess.Popen([sys.executable, "-m", "propensity", "stream", "-w", str(ws.root)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)  # fmt: skip
        written = sum(p.stat().st_size for p in spool.glob("*.spool")) if spool.exists() else 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:  # until this consumer has spooled a batch
            if spool.exists() and sum(p.stat().st_size for p in spool.glob("*.spool")) > written:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.0))  # fault injection: a random moment of consumption
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    done = subprocess.run(
        [sys.executable, "-m", "propensity", "stream", "-w", str(ws.root), "--until-idle", "1", "--json"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout.strip().splitlines()[-1])["sources"][0]["lag"] == 0
    ids, quarantine = _log(ws)
    assert not quarantine
    assert len(ids) == n, f"{n - len(ids)} events lost" if len(ids) < n else "events counted twice"
    assert len({i for i, _ in ids}) == n
