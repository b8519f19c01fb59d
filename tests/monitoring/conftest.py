"""Workspaces for the monitoring tests, built once per session."""

from __future__ import annotations

import pytest
from tests.monitoring.drift_project import build_drift_workspace

from propensity.workspace import Workspace


@pytest.fixture(scope="session")
def quiet_workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Stationary data, no injection: every monitor should be ok."""
    return build_drift_workspace(tmp_path_factory.mktemp("quiet"), customers=300)


@pytest.fixture(scope="session")
def broken_workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The crm source stopped sending three days before the end: alerts fire."""
    return build_drift_workspace(tmp_path_factory.mktemp("broken"), customers=300, broken_source=True)
