"""Shared fixtures: small real workspaces and event files."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from propensity.core.event import UTC_TS
from propensity.workspace import Workspace


@pytest.fixture(scope="session")
def cj_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, list[str]]:
    """One export of Complete Journey for the whole session (it takes ~15 s): the summary, the folder (read
    only: copy what you change) and the progress messages."""
    from propensity.datasets.completejourney import export_completejourney

    out = tmp_path_factory.mktemp("cj_export")
    messages: list[str] = []
    summary = export_completejourney(out, progress=messages.append)
    return summary, out, messages


@pytest.fixture(scope="session", autouse=True)
def _scorer_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The compiled scorer's cache in a temporary folder, not the user's home (subprocesses inherit it)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PROPENSITY_CACHE_DIR", str(tmp_path_factory.mktemp("scorer-cache")))
    yield
    mp.undo()


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """An empty workspace (no propensity.yaml: canonical column names, standard event types)."""
    return Workspace.open(tmp_path)


def write_spec(root: Path, text: str) -> Workspace:
    (root / "propensity.yaml").write_text(text, encoding="utf-8")
    return Workspace.open(root)


def canonical_events(
    n: int, *, customers: int = 50, start: datetime | None = None, seed: int = 0
) -> pa.Table:
    """``n`` valid events in canonical columns, one minute apart, cycling through a few customers and types."""
    import numpy as np

    rng = np.random.default_rng(seed)
    start = start or datetime(2024, 3, 1, tzinfo=UTC)
    times = [start + timedelta(minutes=i) for i in range(n)]
    types = np.array(["page_view", "cart_add", "purchase"])[rng.integers(0, 3, n)]
    return pa.table(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "customer_id": [f"c{i % customers}" for i in range(n)],
            "event_type": types.tolist(),
            "event_time": pa.array(times, UTC_TS),
            "amount": [
                float(round(x, 2)) if t == "purchase" else None
                for x, t in zip(rng.random(n) * 100, types, strict=True)
            ],
            "sku": [f"sku{i % 7}" for i in range(n)],
        }
    )


def write_parquet(table: pa.Table, path: Path) -> Path:
    pq.write_table(table, path)
    return path


# Real servers (redis-server, PostgreSQL) for tests marked `service`.
from tests.services import kafka_broker, postgres_server, redis_server  # noqa: E402, F401


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """One local Spark session for the whole run (2 threads, 1 GiB driver, no UI), started on first use."""
    from propensity.events.spark import spark_session

    session = spark_session(
        "local[2]",
        {
            "spark.driver.memory": "1g",
            "spark.sql.shuffle.partitions": "2",
            "spark.default.parallelism": "2",
            "spark.sql.adaptive.coalescePartitions.enabled": "true",
        },
        app_name="propensity-tests",
    )
    yield session
    session.stop()
