"""Fixtures for the online store tests: a key prefix per test, and a small trained workspace for server tests."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from propensity.workspace import Workspace

# The feature tests' helpers and hypothesis strategies are imported from there, not copied.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "features"))


@pytest.fixture
def prefix() -> str:
    """A Redis key prefix of this test's own, so tests share one redis-server without flushing it."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def trained_workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A small synthetic project with a production bundle (buy and churn)."""
    from tests.training import synthetic_project

    return synthetic_project.trained_workspace(
        tmp_path_factory.mktemp("redis-serve"), customers=400, days=120, seed=11,
        spec={"actions": [{"template": "buy"}, {"template": "churn"}]},
    )  # fmt: skip
