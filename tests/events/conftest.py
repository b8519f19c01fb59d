"""Every event-log test runs against each backend: the DuckDB tables (the reference) and the Parquet store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(params=["duckdb", "parquet"], autouse=True)
def event_storage(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The event log backend of workspaces whose spec has no ``storage:`` section."""
    monkeypatch.setenv("PROPENSITY_EVENTS_STORAGE", request.param)
    yield request.param
