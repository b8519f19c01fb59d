"""The service fixtures start real servers that answer."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.service


def test_redis_server_answers(redis_server) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.set("propensity:test", "1")
    assert client.get("propensity:test") == b"1"


def test_postgres_server_answers(postgres_server) -> None:
    import psycopg

    with psycopg.connect(postgres_server.url) as con:
        assert con.execute("SELECT 1 + 1").fetchone() == (2,)
