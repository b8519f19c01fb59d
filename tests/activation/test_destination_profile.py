"""Profile store against a real redis-server: one hash per customer, expiring with its scores, never older."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import redis
from tests.activation.destinations_fixtures import canonical_rows
from tests.services import RedisServer

from propensity.activation.destinations.base import PublishRun
from propensity.activation.destinations.profile import ProfileStore
from propensity.config.destinations import ProfileDestination

pytestmark = pytest.mark.service


def _store(redis_server: RedisServer, prefix: str) -> ProfileStore:
    return ProfileStore(ProfileDestination(name="p", redis_url=redis_server.url, prefix=prefix))


def test_each_customer_gets_a_hash_with_scores_segments_and_expiry(redis_server: RedisServer) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    scores = np.array([0.9, 0.2, 0.1, 0.7])  # buy for c0, c1; churn for c0, c1
    rows = canonical_rows(2, scored_at=now, ttl=timedelta(hours=2), scores=scores)
    store = _store(redis_server, "act-profile-t1")
    report = store.publish(PublishRun.from_rows(rows), rows)
    assert (report.status, report.accepted) == ("delivered", 2)
    p = store.read("c0")
    assert float(p["propensity_buy_7d"]) == 0.9 and p["segment_buy_7d"] == "high"
    assert float(p["propensity_churn_30d"]) == pytest.approx(0.1)
    assert p["next_best_action"] == "buy_7d"
    assert p["expires"] == (now + timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    assert p["run_id"] == "run-1"
    ttl = redis.Redis.from_url(redis_server.url).ttl("act-profile-t1:c0")
    assert 7100 < ttl <= 7200


def test_an_older_run_never_overwrites_a_newer_decision(redis_server: RedisServer) -> None:
    now = datetime.now(UTC)
    store = _store(redis_server, "act-profile-t2")
    newer = canonical_rows(3, run_id="new", scored_at=now, scores=np.full(6, 0.9))
    older = canonical_rows(3, run_id="old", scored_at=now - timedelta(minutes=5), scores=np.full(6, 0.1))
    store.publish(PublishRun.from_rows(newer), newer)
    report = store.publish(PublishRun.from_rows(older), older)
    assert report.details == {"written": 0, "kept_newer": 3}
    assert store.read("c1")["run_id"] == "new"


def test_the_profile_disappears_when_the_scores_expire(redis_server: RedisServer) -> None:
    now = datetime.now(UTC)
    rows = canonical_rows(
        1, scored_at=now - timedelta(seconds=10), ttl=timedelta(seconds=10, milliseconds=300)
    )
    store = _store(redis_server, "act-profile-t3")
    store.publish(PublishRun.from_rows(rows), rows)
    assert store.read("c0")
    deadline = time.monotonic() + 5
    while store.read("c0") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.read("c0") == {}
