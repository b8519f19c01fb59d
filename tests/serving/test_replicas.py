"""Replicas that agree: two `propensity serve` processes on one Redis, both consuming a Kafka topic (one group,
the partitions split between them); once an event is applied, both answer the same scores for its customer."""

from __future__ import annotations

import shutil
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from tests.serve_process import call, same_scores, serve_process, wait_ready
from tests.services import KafkaBroker, RedisServer

from propensity.workspace import Workspace

pytestmark = [pytest.mark.service, pytest.mark.slow]


def test_two_servers_fed_by_kafka_answer_the_same_scores(
    trained_workspace: Workspace, redis_server: RedisServer, kafka_broker: KafkaBroker, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    root = tmp_path / "ws"
    shutil.copytree(
        trained_workspace.root, root, ignore=shutil.ignore_patterns("spool", "snapshots", "*.lock")
    )
    topic = f"replicas-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topic(topic, partitions=2)
    spec_path = root / "propensity.yaml"
    spec: dict[str, Any] = yaml.safe_load(spec_path.read_text())
    spec["sources"] = [*spec.get("sources", []), {"name": "web", "kafka": {"topic": topic, "group": topic}}]
    spec.setdefault("serving", {})["redis_prefix"] = f"replicas-{uuid.uuid4().hex[:8]}"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_broker.bootstrap)
    ws = Workspace.open(root)
    customers = [f"replica-{i}" for i in range(6)]
    with ExitStack() as stack:
        a, proc_a = stack.enter_context(
            serve_process(ws, "--store", redis_server.url, "--streams", wait=False)
        )
        b, proc_b = stack.enter_context(
            serve_process(ws, "--store", redis_server.url, "--streams", wait=False)
        )
        wait_ready(a, proc_a)
        wait_ready(b, proc_b)
        now = datetime.now(UTC).isoformat()
        kafka_broker.produce(
            topic,
            [orjson.dumps({"event_id": f"{c}-{k}", "customer_id": c, "event_type": kind, "event_time": now,
                           **({"amount": 50.0} if kind == "purchase" else {})})
             for c in customers for k, kind in enumerate(["page_view", "cart_add", "purchase"])],
            key_of=lambda i: customers[i // 3].encode(),
        )  # fmt: skip
        deadline = time.monotonic() + 120
        pending = set(customers)
        while pending and time.monotonic() < deadline:  # until each customer's three events are applied
            for c in list(pending):
                answers = [call(f"{base}/v1/predict?customer_id={c}")[1] for base in (a, b)]
                if not any(x["cold_start"] for x in answers) and same_scores(
                    answers[0]["scores"], answers[1]["scores"]
                ):
                    pending.discard(c)
        assert not pending, f"not visible alike on both servers: {sorted(pending)}"
        for c in customers:
            first, second = (call(f"{base}/v1/predict?customer_id={c}")[1] for base in (a, b))
            assert same_scores(first["scores"], second["scores"]), c
            assert first["feature_set_version"] == second["feature_set_version"]
