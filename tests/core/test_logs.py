"""Structured logs: JSON lines with the extra fields, and the server's access log with request ids."""

from __future__ import annotations

import io
import json
import logging

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from typer.testing import CliRunner

from propensity.core.logs import JsonFormatter, configure_logging, current_format
from propensity.server.access_log import AccessLogMiddleware


@pytest.fixture
def json_lines() -> io.StringIO:
    stream = io.StringIO()
    configure_logging("json", "info", stream=stream)
    yield stream
    configure_logging("text", "warning")


def test_a_json_line_holds_the_message_the_extra_fields_and_the_exception(json_lines: io.StringIO) -> None:
    log = logging.getLogger("propensity.test")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed for %d rows", 2, extra={"run_id": "r-1"})
    line = json.loads(json_lines.getvalue().splitlines()[-1])
    assert (line["level"], line["logger"], line["message"], line["run_id"]) == ("error", "propensity.test",
                                                                               "failed for 2 rows", "r-1")  # fmt: skip
    assert "ValueError: boom" in line["exception"] and line["time"].endswith("+00:00")


def test_bad_format_or_level_is_refused_with_the_allowed_values() -> None:
    with pytest.raises(ValueError, match="text, json"):
        configure_logging("xml")
    with pytest.raises(ValueError, match="debug, info"):
        configure_logging("json", "loud")


def test_access_log_tags_each_request_and_never_logs_the_query(json_lines: io.StringIO) -> None:
    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("hi")

    app = AccessLogMiddleware(Starlette(routes=[Route("/v1/predict", hello)]))
    with TestClient(app) as client:
        kept = client.get("/v1/predict?customer_id=alice", headers={"X-Request-ID": "req-42"})
        fresh = client.get("/v1/predict?customer_id=bob", headers={"X-Request-ID": "bad id with spaces"})
        missing = client.get("/nowhere")
    assert kept.headers["x-request-id"] == "req-42"
    assert (
        fresh.headers["x-request-id"] not in ("", "bad id with spaces")
        and len(fresh.headers["x-request-id"]) == 32
    )
    records = [json.loads(x) for x in json_lines.getvalue().splitlines()]
    access = [r for r in records if r["logger"] == "propensity.access"]
    assert [(r["request_id"], r["path"], r["status"]) for r in access] == [
        ("req-42", "/v1/predict", 200),
        (fresh.headers["x-request-id"], "/v1/predict", 200),
        (missing.headers["x-request-id"], "/nowhere", 404),
    ]
    assert "alice" not in json.dumps(access) and "bob" not in json.dumps(access)
    assert all(r["duration_ms"] >= 0 and r["method"] == "GET" for r in access)


def test_the_cli_takes_a_global_log_format() -> None:
    from propensity.cli.app import app

    try:
        result = CliRunner().invoke(app, ["--log-format", "json", "init", "--help"])
        assert result.exit_code == 0 and current_format() == "json"
        assert any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)
        bad = CliRunner().invoke(app, ["--log-format", "xml", "init", "--help"])
        assert bad.exit_code == 2 and "text, json" in bad.output
    finally:
        configure_logging("text", "warning")
