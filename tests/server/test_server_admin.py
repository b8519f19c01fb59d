"""API keys with scopes (401/403 JSON, keys never logged) and hot model promotion/rollback under traffic."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from tests.server.bundles import copy_workspace

from propensity.registry.registry import Registry
from propensity.server import ServerState, create_app
from propensity.serving.auth import KeyConfigError, KeyRing
from propensity.serving.startup import build_service
from propensity.workspace import Workspace

KEYS = "web:predict:pk-123,feeder:ingest:ik-456,ops:admin+predict:ak-789"


@pytest.fixture(scope="module")
def two_bundles(
    two_bundle_workspace: tuple[Workspace, str, str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Workspace, str, str]:
    """A copy of the shared workspace with a second, different bundle registered as a candidate."""
    source, production, candidate = two_bundle_workspace
    return copy_workspace(source, tmp_path_factory.mktemp("admin") / "ws"), production, candidate


@pytest.fixture
def secured(two_bundles: tuple[Workspace, str, str]) -> Iterator[TestClient]:
    ws = two_bundles[0]
    service, _ = build_service(ws)
    state = ServerState(service=service, workspace=ws, keys=KeyRing.parse_env(KEYS))
    with TestClient(create_app(state), raise_server_exceptions=False) as c:
        yield c


def test_key_ring_configuration(tmp_path: Path) -> None:
    f = tmp_path / "keys.json"
    f.write_text(json.dumps([
        {"name": "a", "scopes": ["predict"], "sha256": hashlib.sha256(b"secret-a").hexdigest()},
        {"name": "b", "scopes": ["ingest", "admin"], "key": "secret-b"},
    ]))  # fmt: skip
    ring = KeyRing.load_file(f)
    assert ring.check("secret-a", "predict") == "a" and ring.check("secret-b", "admin") == "b"
    assert KeyRing.configured(None, None).enabled is False
    assert KeyRing.configured(f, "x:predict:y").keys == ring.keys  # the file wins
    for bad in ("nocolons", "a:teleport:k", "a::k", ":predict:k", "a:predict:"):
        with pytest.raises(KeyConfigError):
            KeyRing.parse_env(bad)
    f.write_text(json.dumps([{"name": "a", "scopes": ["predict"], "sha256": "zz"}]))
    with pytest.raises(KeyConfigError, match="hex"):
        KeyRing.load_file(f)
    with pytest.raises(KeyConfigError, match="unique"):
        KeyRing.parse_env("a:predict:k1,a:admin:k2")


def test_scopes_and_errors(secured: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    url = "/v1/predict?customer_id=c1"
    with caplog.at_level(logging.DEBUG):
        r = secured.get(url)
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
        r = secured.get(url, headers={"Authorization": "Bearer wrong-key-000"})
        assert r.status_code == 401
        r = secured.get(url, headers={"X-API-Key": "ik-456"})
        assert r.status_code == 403 and "predict scope" in r.json()["error"]["message"]
        assert secured.get(url, headers={"Authorization": "Bearer pk-123"}).status_code == 200
        assert secured.get(url, headers={"X-API-Key": "ak-789"}).status_code == 200
        assert secured.post("/v1/events", json={}, headers={"X-API-Key": "pk-123"}).status_code == 403
        assert secured.post("/v1/events", json=[7], headers={"X-API-Key": "ik-456"}).status_code == 422
        assert secured.get("/v1/models", headers={"X-API-Key": "pk-123"}).status_code == 403
        assert secured.get("/v1/models", headers={"X-API-Key": "ak-789"}).status_code == 200
        for open_path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
            assert secured.get(open_path).status_code == 200, open_path
    for secret in ("wrong-key-000", "ik-456", "pk-123", "ak-789"):
        assert secret not in caplog.text
        assert secret not in r.text
    assert (
        "access-control-allow-origin"
        not in secured.get("/healthz", headers={"Origin": "https://x.example"}).headers
    )


def test_promote_and_rollback_hot_under_traffic(
    secured: TestClient, two_bundles: tuple[Workspace, str, str]
) -> None:
    ws, production, candidate = two_bundles
    admin = {"X-API-Key": "ak-789"}
    statuses: list[int] = []
    versions: set[str] = set()
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            r = secured.get("/v1/predict?customer_id=c7", headers=admin)
            statuses.append(r.status_code)
            versions.add(r.json().get("model_version", "?"))

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        r = secured.post("/v1/models/no-such-bundle/promote", headers=admin)
        assert r.status_code == 404, r.text
        r = secured.post(
            f"/v1/models/{candidate}/promote", json={"force": True, "reason": "test: hot swap"}, headers=admin
        )
        assert r.status_code == 200, r.text
        assert r.json()["serving"]["model_version"] == candidate and r.json()["previous"] == production
        assert Registry(ws).production() == candidate
        assert secured.get("/v1/predict?customer_id=c7", headers=admin).json()["model_version"] == candidate
        r = secured.post("/v1/models/rollback", headers=admin)
        assert r.status_code == 200, r.text
        assert r.json()["serving"]["model_version"] == production
        assert Registry(ws).production() == production
        r = secured.post(f"/v1/models/{production}/promote", headers=admin)
        assert r.status_code == 409 and "already in production" in r.json()["error"]["message"]
        r = secured.post(f"/v1/models/{candidate}/promote", json={"force": "yes"}, headers=admin)
        assert r.status_code == 422 and r.json()["error"]["field"] == "force"
    finally:
        stop.set()
        worker.join(timeout=30)
    assert statuses and set(statuses) == {200}, "a request failed during the swaps"
    assert versions <= {production, candidate}
    bundles = secured.get("/v1/models", headers=admin).json()["bundles"]
    assert {b["model_version"] for b in bundles} >= {production, candidate}


def test_canary_route_sends_a_stable_share_to_the_candidate(
    secured: TestClient, two_bundles: tuple[Workspace, str, str]
) -> None:
    ws, _, _ = two_bundles
    admin = {"X-API-Key": "ak-789"}
    production = Registry(ws).production()
    other = next(e.id for e in Registry(ws).entries() if e.id != production)
    r = secured.post("/v1/models/canary", json={"share": 0.3, "model_version": production}, headers=admin)
    assert r.status_code == 409 and "already in production" in r.json()["error"]["message"]
    assert (
        secured.post("/v1/models/canary", json={"share": 0.3}, headers={"X-API-Key": "pk-123"}).status_code
        == 403
    )
    r = secured.post("/v1/models/canary", json={"share": 0.3, "model_version": other}, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["serving"]["canary"] == {"model_version": other, "share": 0.3}
    answers = {}
    for i in range(300):
        body = secured.get(f"/v1/predict?customer_id=k{i}", headers=admin).json()
        answers[f"k{i}"] = (body["canary"], body["model_version"])
        assert body["model_version"] == (other if body["canary"] else production)
    share = sum(c for c, _ in answers.values()) / len(answers)
    assert 0.2 < share < 0.4
    # Deterministic: the same customers go to the canary in a batch call too.
    batch = secured.post("/v1/predict", json={"customer_ids": list(answers)[:100]}, headers=admin).json()
    for result in batch["results"]:
        assert result.get("canary", False) == answers[result["customer_id"]][0]
    r = secured.post("/v1/models/canary", json={"share": 0}, headers=admin)
    assert r.status_code == 200 and r.json()["serving"]["canary"] is None
    assert secured.get("/v1/predict?customer_id=k1", headers=admin).json()["canary"] is False
