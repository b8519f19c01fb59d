"""Regressions from the bad-input battery of issue 19 (items 5, 6, 7): each was reproduced against the old
server first. Ambiguous field names, impossible times and deep nesting are clean 422s with nothing written;
limits are the same everywhere; a 405 says what is allowed; the OpenAPI document is generated and valid."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from openapi_spec_validator import validate
from starlette.testclient import TestClient

from propensity.events.log import DuckDBEventLog
from propensity.server import ServerState, create_app
from propensity.serving.startup import build_service
from propensity.workspace import Workspace


@pytest.fixture(scope="module")
def client(workspace: Workspace) -> Iterator[TestClient]:
    service, _ = build_service(workspace)
    state = ServerState(service=service, workspace=workspace, max_body_bytes=4 * 1024 * 1024)
    with TestClient(create_app(state), raise_server_exceptions=False) as c:
        yield c


def _count(ws: Workspace, where: str = "TRUE", params: list[Any] | None = None) -> int:
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        return int(con.execute(f"SELECT count(*) FROM events WHERE {where}", params or []).fetchall()[0][0])


def _event(**fields: Any) -> dict[str, Any]:
    return {
        "customer_id": "v-1",
        "event_type": "page_view",
        "event_time": datetime.now(UTC).isoformat(),
        **fields,
    }


def test_field_names_differing_only_in_case_are_refused_naming_both(
    client: TestClient, workspace: Workspace
) -> None:
    n0 = _count(workspace)
    body = {"CUSTOMER_ID": "victim-x", "customer_id": "real-owner", "event_type": "page_view",
            "event_time": datetime.now(UTC).isoformat()}  # fmt: skip
    r = client.post("/v1/events", json=body)
    assert r.status_code == 422, r.text
    message = r.json()["error"]["message"]
    assert "'CUSTOMER_ID'" in message and "'customer_id'" in message
    # The same through properties, and between two extra fields.
    for event in (_event(properties={"Coupon": "a"}, coupon="b"), _event(Device="a", device="b")):
        r = client.post("/v1/events", json=[_event(), event])
        assert r.status_code == 422 and r.json()["error"]["errors"][0]["index"] == 1, r.text
    assert _count(workspace) == n0
    assert _count(workspace, "customer_id IN ('victim-x', 'real-owner')") == 0


def test_impossible_times_are_refused_and_the_server_keeps_answering(
    client: TestClient, workspace: Workspace
) -> None:
    n0 = _count(workspace)
    for when in ("-infinity", "infinity", "0044-03-15T00:00:00 BC", "0000-01-01T00:00:00Z", "-0044-03-15T00:00:00Z",
                 "0044-03-15 (BC)", 1e300, -1e300):  # fmt: skip
        r = client.post("/v1/events", json=_event(customer_id="t-inf", event_time=when))
        assert r.status_code == 422, (when, r.text)
        assert r.json()["error"]["field"] == "event_time", r.text
    assert _count(workspace) == n0
    r = client.get("/v1/predict", params={"customer_id": "t-inf"})
    assert r.status_code == 200 and r.json()["cold_start"] is True


def test_deep_nesting_is_a_422_with_nothing_written(client: TestClient, workspace: Workspace) -> None:
    n0 = _count(workspace)
    deep = '{"a":' * 1000 + '"x"' + "}" * 1000
    head = (
        f'{{"customer_id": "deep", "event_type": "page_view", "event_time": "{datetime.now(UTC).isoformat()}"'
    )
    for body in (head + f', "extra": {deep}}}', head + f', "properties": {{"p": {deep}}}}}',
                 head + ', "extra": ' + "[" * 40 + "1" + "]" * 40 + "}"):  # fmt: skip
        r = client.post("/v1/events", content=body.encode(), headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text
        assert "deeper than" in r.json()["error"]["message"]
    # Nesting within the limit is kept (as JSON text in properties).
    r = client.post(
        "/v1/events", json=_event(customer_id="nest-ok", event_id="nest-ok-1", extra={"a": {"b": [1, 2]}})
    )
    assert r.status_code == 200, r.text
    assert _count(workspace) == n0 + 1


@pytest.mark.parametrize(
    ("method", "url", "body", "field"),
    [
        ("POST", "/v1/events", _event(customer_id=True), "customer_id"),
        ("POST", "/v1/events", _event(customer_id=42), "customer_id"),
        ("POST", "/v1/events", _event(customer_id="x" * 1_000_000), "customer_id"),
        ("POST", "/v1/events", _event(customer_id="x" * 257), "customer_id"),
        ("POST", "/v1/events", _event(event_id="e" * 257), "event_id"),
        ("POST", "/v1/events", _event(event_type=False), "event_type"),
        ("POST", "/v1/events", _event(amount="12"), "amount"),
        ("POST", "/v1/events", _event(sku=["a"]), "sku"),
        ("POST", "/v1/events", _event(event_time=True), "event_time"),
        ("POST", "/v1/events", {"events": [_event()], "extra": 1}, "extra"),
        ("POST", "/v1/predict", {"customer_ids": [True]}, "customer_ids[0]"),
        ("POST", "/v1/predict", {"customer_ids": ["x" * 257]}, "customer_ids[0]"),
        ("POST", "/v1/predict", {"customer_ids": ["a"], "unknown": 1}, "unknown"),
        ("GET", "/v1/predict?customer_id=%20%20", None, "customer_id"),
        ("GET", "/v1/predict?customer_id=" + "x" * 257, None, "customer_id"),
    ],
)  # fmt: skip
def test_limits_and_types_are_the_same_everywhere(
    client: TestClient, workspace: Workspace, method: str, url: str, body: Any, field: str
) -> None:
    n0 = _count(workspace)
    r = client.request(method, url, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field, r.text
    assert _count(workspace) == n0


def test_405_says_which_methods_are_allowed(client: TestClient) -> None:
    r = client.delete("/v1/predict")
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert {m.strip() for m in r.headers["allow"].split(",")} >= {"GET", "POST"}
    r = client.get("/v1/events")
    assert r.status_code == 405 and r.headers["allow"] == "POST"


def test_the_openapi_document_is_generated_valid_and_honest(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    validate(doc)
    schemas = doc["components"]["schemas"]
    # Segments come from the project's segments: section, so the document does not fix their names.
    assert "enum" not in str(schemas["Score"]["properties"]["segment"])
    # event_time is text or epoch seconds, as the server accepts.
    assert {"string", "number"} <= {
        o.get("type") for o in schemas["Event"]["properties"]["event_time"]["anyOf"]
    }
    assert schemas["Event"]["properties"]["customer_id"]["maxLength"] == 256
    predict = doc["paths"]["/v1/predict"]["get"]
    assert [p["name"] for p in predict["parameters"]] == ["customer_id", "actions", "explain"]
    assert {"200", "401", "403", "422", "503"} <= set(predict["responses"])


def test_metrics_speak_openmetrics_when_asked_and_carry_process_metrics(client: TestClient) -> None:
    client.get("/v1/predict", params={"customer_id": "om-1"})
    text = client.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain")
    assert "process_cpu_seconds_total" in text.text or "process_" in text.text
    om = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")
    assert 'propensity_http_requests_total{route="predict",status="200"}' in om.text
    assert "propensity_http_request_duration_seconds_bucket" in om.text
