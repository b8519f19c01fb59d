"""The HTTP API end to end on a real trained workspace: predictions equal the bundle's own, events show up at
once, bad input is a 4xx naming the field, a rejected batch writes nothing, and the model swaps hot."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from starlette.testclient import TestClient

from propensity.events.log import DuckDBEventLog
from propensity.registry.bundle import load_bundle
from propensity.registry.registry import Registry
from propensity.scoring.model import ServingModel
from propensity.server import ServerState, create_app
from propensity.serving.service import ScoringService
from propensity.serving.startup import build_service
from propensity.workspace import Workspace


@pytest.fixture(scope="module")
def state(workspace: Workspace) -> ServerState:
    service, _ = build_service(workspace)
    return ServerState(service=service, workspace=workspace, max_body_bytes=256 * 1024)


@pytest.fixture(scope="module")
def client(state: ServerState) -> Iterator[TestClient]:
    with TestClient(create_app(state), raise_server_exceptions=False) as c:
        yield c


def _customers(ws: Workspace, n: int) -> list[str]:
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        rows = con.execute(
            "SELECT customer_id FROM events GROUP BY customer_id ORDER BY count(*) DESC LIMIT ?", [n]
        ).fetchall()
    return [str(r[0]) for r in rows]


def _bundle_probability(ws: Workspace, state: ServerState, customer_id: str, action: str) -> float:
    """What the registry's own loader (LightGBM + the training calibrator) says for the store's vector."""
    bundle = load_bundle(Registry(ws).path(Registry(ws).production() or ""))
    store: Any = state.service.store
    row = store.engine.vector_dict(customer_id, datetime.now(UTC))
    names = bundle.actions[action].encoder.names
    table = pa.table({n: pa.array([row.get(n)]) for n in names})
    return float(bundle.predict(action, table)[0])


def _count_events(ws: Workspace) -> int:
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        return int(con.execute("SELECT count(*) FROM events").fetchall()[0][0])


def test_predict_equals_the_bundle(client: TestClient, workspace: Workspace, state: ServerState) -> None:
    for cid in _customers(workspace, 5):
        r = client.get("/v1/predict", params={"customer_id": cid})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model_version"] == Registry(workspace).production()
        assert body["feature_set_version"].startswith("fs-")
        assert body["cold_start"] is False and body["canary"] is False
        assert body["scored_at"].endswith("Z") and body["expiration_at"] > body["scored_at"]
        assert body["latency_ms"] < 50
        # The project declares buy and churn; this small bundle has a model for buy only (churn had too few
        # rows), so churn is answered by the flagged fallback. Its data ended long ago: nobody is active in the
        # last 30 days, so nobody is eligible for churn now, and gets no score.
        model_actions = set(state.service.model.action_names)  # type: ignore[union-attr]
        assert model_actions == {"buy_7d"} and set(body["scores"]) == {"buy_7d", "churn_30d"}
        assert body["fallback"] is True
        churn = dict(body["scores"]["churn_30d"])
        # No score, and the rule that excluded the customer says why.
        assert churn.pop("reason").startswith("eligibility.active_within: no page_view")
        assert churn == {"probability": None, "percentile": None, "segment": None, "eligible": False,
                         "fallback": True}  # fmt: skip
        for action in model_actions:
            entry = body["scores"][action]
            assert set(entry) == {"probability", "percentile", "segment", "eligible", "fallback"}
            assert entry["fallback"] is False and entry["eligible"] is True
            want = _bundle_probability(workspace, state, cid, action)
            assert entry["probability"] == pytest.approx(want, abs=1e-9)


def test_unknown_customer_is_a_flagged_cold_start(client: TestClient) -> None:
    r = client.get(
        "/v1/predict", params={"customer_id": "never-seen", "actions": "buy_7d", "explain": "true"}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["cold_start"] is True
    assert list(body["scores"]) == ["buy_7d"]
    assert 0 < body["scores"]["buy_7d"]["probability"] < 1
    codes = body["scores"]["buy_7d"]["reason_codes"]
    assert isinstance(codes, list) and len(codes) <= 3


def test_explain_gives_the_features_that_moved_the_score(
    client: TestClient, workspace: Workspace, state: ServerState
) -> None:
    cid = _customers(workspace, 1)[0]
    body = client.get("/v1/predict", params={"customer_id": cid, "explain": "true"}).json()
    assert "reason_codes" not in body["scores"]["churn_30d"]  # no model, no attributions
    for action, entry in body["scores"].items():
        if action not in state.service.model.actions:  # type: ignore[union-attr]
            continue
        codes = entry["reason_codes"]
        assert 1 <= len(codes) <= 3
        assert {"feature", "value", "contribution", "direction"} == set(codes[0])
        mags = [abs(c["contribution"]) for c in codes]
        assert mags == sorted(mags, reverse=True)
        assert all((c["contribution"] > 0) == (c["direction"] == "up") for c in codes)
    plain = client.get("/v1/predict", params={"customer_id": cid}).json()
    assert all("reason_codes" not in e for e in plain["scores"].values())


def test_an_event_is_durable_and_reflected_by_the_next_prediction(
    client: TestClient, workspace: Workspace, state: ServerState
) -> None:
    cid = "fresh-customer-1"
    before = client.get("/v1/predict", params={"customer_id": cid}).json()
    assert before["cold_start"] is True
    n0 = _count_events(workspace)
    event = {"event_id": "live-1", "customer_id": cid, "event_type": "purchase",
             "event_time": datetime.now(UTC).isoformat(), "amount": 42.5, "properties": {"coupon": "X1"}}  # fmt: skip
    r = client.post("/v1/events", json=event)
    assert r.status_code == 200, r.text
    assert r.json() == {"received": 1, "accepted": 1, "duplicates": 0}
    assert _count_events(workspace) == n0 + 1  # in the log before the response
    # Feature freshness on /metrics: the online features changed just now, from an event a moment old.
    text = client.get("/metrics").text
    gauges = dict(
        line.split(" ") for line in text.splitlines() if line.startswith(("propensity_online_features_age_seconds",
                                                                          "propensity_live_event_lag_seconds"))
    )  # fmt: skip
    assert 0 <= float(gauges["propensity_online_features_age_seconds"]) < 30
    assert 0 <= float(gauges["propensity_live_event_lag_seconds"]) < 30
    after = client.get("/v1/predict", params={"customer_id": cid}).json()
    assert after["cold_start"] is False
    store: Any = state.service.store
    assert store.engine.vector_dict(cid)["purchases_30d"] == 1
    for action in state.service.model.action_names:  # type: ignore[union-attr]
        want = _bundle_probability(workspace, state, cid, action)
        assert after["scores"][action]["probability"] == pytest.approx(want, abs=1e-9)
    # The purchase just now makes the customer active: eligible for churn (scored by the fallback here).
    assert (
        after["scores"]["churn_30d"]["eligible"] is True and after["scores"]["churn_30d"]["fallback"] is True
    )
    # Sending it again is accepted and changes nothing.
    again = client.post("/v1/events", json={"events": [event]})
    assert again.json() == {"received": 1, "accepted": 0, "duplicates": 1}
    assert _count_events(workspace) == n0 + 1


def test_a_batch_with_one_bad_event_writes_nothing(client: TestClient, workspace: Workspace) -> None:
    n0 = _count_events(workspace)
    now = datetime.now(UTC).isoformat()
    good = [{"customer_id": f"b{i}", "event_type": "page_view", "event_time": now} for i in range(50)]
    bad = [
        *good[:20],
        {"customer_id": "b-x", "event_type": "page_view", "event_time": "not a time"},
        *good[20:],
    ]
    r = client.post("/v1/events", json=bad)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "invalid_events" and err["field"] == "event_time"
    assert err["errors"][0]["index"] == 20
    assert _count_events(workspace) == n0
    r = client.post("/v1/events", json=good)
    assert r.status_code == 200 and r.json()["accepted"] == 50


@pytest.mark.parametrize(
    ("request_args", "status", "field"),
    [
        ({"method": "GET", "url": "/v1/predict"}, 422, "customer_id"),
        ({"method": "GET", "url": "/v1/predict?customer_id="}, 422, "customer_id"),
        ({"method": "GET", "url": "/v1/predict?customer_id=" + "x" * 300}, 422, "customer_id"),
        ({"method": "GET", "url": "/v1/predict?customer_id=c&actions=teleport"}, 422, "actions"),
        ({"method": "GET", "url": "/v1/predict?customer_id=c&explain=perhaps"}, 422, "explain"),
        ({"method": "POST", "url": "/v1/predict", "content": b"{not json"}, 400, "body"),
        ({"method": "POST", "url": "/v1/predict", "json": [1, 2]}, 422, "body"),
        ({"method": "POST", "url": "/v1/predict", "json": {"customer_ids": []}}, 422, "customer_ids"),
        ({"method": "POST", "url": "/v1/predict", "json": {"customer_ids": [1]}}, 422, "customer_ids[0]"),
        ({"method": "POST", "url": "/v1/predict", "json": {"customer_ids": ["a"] * 1001}}, 422, "customer_ids"),
        ({"method": "POST", "url": "/v1/predict", "json": {"customer_ids": ["a"], "actions": "buy"}}, 422, "actions"),
        ({"method": "POST", "url": "/v1/events", "json": "hello"}, 422, "body"),
        ({"method": "POST", "url": "/v1/events", "json": {"events": {"a": 1}}}, 422, "events"),
        ({"method": "POST", "url": "/v1/events", "json": []}, 422, "events"),
        ({"method": "POST", "url": "/v1/events", "json": [{"customer_id": "c", "event_type": "page_view",
                                                            "event_time": "2025-01-01T00:00:00Z",
                                                            "available_at": "2025-01-01T00:00:00Z"}]}, 422, "available_at"),
        ({"method": "POST", "url": "/v1/events", "json": [{"customer_id": ["c"], "event_type": "page_view"}]}, 422, "customer_id"),
        ({"method": "POST", "url": "/v1/events", "json": [{"event_type": "page_view", "event_time": "2025-01-01T00:00:00Z"}]}, 422, "customer_id"),
        ({"method": "POST", "url": "/v1/events", "json": [7]}, 422, "event"),
        ({"method": "POST", "url": "/v1/events", "json": [{"customer_id": "c", "event_type": "page_view",
                                                            "event_time": "2025-01-01T00:00:00Z", "": 1}]}, 422, "(empty)"),
        ({"method": "POST", "url": "/v1/models/canary", "json": {"share": 2}}, 422, "share"),
        ({"method": "POST", "url": "/v1/models/canary", "json": {"share": 0.1, "model_version": 5}}, 422, "model_version"),
        ({"method": "POST", "url": "/v1/events", "content": b"x" * 300_000}, 413, None),
    ],
)  # fmt: skip
def test_bad_input_is_a_4xx_naming_the_field(
    client: TestClient, request_args: dict[str, Any], status: int, field: str | None
) -> None:
    r = client.request(**request_args)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] and err["message"]
    if field is not None:
        assert err["field"] == field


def test_fuzzed_bodies_never_give_a_5xx(client: TestClient) -> None:
    rng = np.random.default_rng(0)
    pieces: list[Any] = [None, True, 1, -1.5, 1e308, "", "x", [], {}, {"customer_ids": None}, {"events": [None]},
                         [{"customer_id": "c", "event_type": "purchase", "event_time": "2025-01-01", "amount": "NaN"}],
                         [{"customer_id": "c", "event_type": "purchase", "event_time": 1e20}],
                         [{"customer_id": "c", "event_type": "purchase", "event_time": "2025-01-01", "properties": [1]}],
                         {"customer_ids": ["a", "b"], "actions": [1]}]  # fmt: skip
    for _ in range(40):
        body = pieces[int(rng.integers(len(pieces)))]
        for url in ("/v1/predict", "/v1/events"):
            r = client.post(url, json=body)
            assert 200 <= r.status_code < 500, (url, body, r.text)
    for raw in (b"\xff\xfe", b"[" * 5000, b'{"events": [' + b"1," * 10 + b"]}"):
        assert client.post("/v1/events", content=raw).status_code < 500


def test_batch_predict(client: TestClient, workspace: Workspace) -> None:
    ids = [*_customers(workspace, 20), "nobody-at-all"]
    r = client.post("/v1/predict", json={"customer_ids": ids, "actions": ["buy_7d"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["customer_id"] for x in body["results"]] == ids
    assert body["results"][-1]["cold_start"] is True
    for x in body["results"][:3]:
        one = client.get("/v1/predict", params={"customer_id": x["customer_id"], "actions": "buy_7d"}).json()
        assert x["scores"]["buy_7d"]["probability"] == pytest.approx(
            one["scores"]["buy_7d"]["probability"],
            abs=1e-9,  # recency terms move with the clock
        )


def test_health_metrics_docs_and_errors(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["scorer"] in ("native", "numpy")
    client.get("/v1/predict", params={"customer_id": "m1"})
    text = client.get("/metrics").text
    assert 'propensity_http_requests_total{route="predict",status="200"}' in text
    assert "propensity_http_request_duration_seconds_bucket" in text and "propensity_model_info{" in text
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.") and {"/v1/predict", "/v1/events", "/healthz"} <= set(
        spec["paths"]
    )
    assert "swagger-ui" in client.get("/docs").text
    assert client.get("/nope").json()["error"]["code"] == "not_found"
    assert client.delete("/v1/predict").json()["error"]["code"] == "method_not_allowed"
    assert "buy_7d" in client.get("/v1/models").json()["serving"]["actions"]


def test_no_model_means_not_ready_and_503(state: ServerState) -> None:
    empty = ServerState(service=ScoringService(state.service.store), workspace=None)
    with TestClient(create_app(empty)) as c:
        assert c.get("/readyz").status_code == 503
        r = c.get("/v1/predict", params={"customer_id": "x"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_model"
        assert c.post("/v1/events", json={}).status_code == 503


def test_hot_swap_changes_the_model_between_requests(
    state: ServerState, workspace: Workspace, tmp_path: Path
) -> None:
    service = ScoringService(state.service.store, state.service.model)
    with TestClient(create_app(ServerState(service=service))) as c:
        first = c.get("/v1/predict", params={"customer_id": "c1"}).json()
        bundle_dir = Registry(workspace).path(first["model_version"])
        other = ServingModel.from_bundle_dir(bundle_dir)
        other.version = "m-swapped"
        previous = service.swap(other)
        assert previous is not None and previous.version == first["model_version"]
        assert c.get("/v1/predict", params={"customer_id": "c1"}).json()["model_version"] == "m-swapped"
