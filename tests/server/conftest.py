"""A small trained workspace with a production bundle, shared by the server tests (built once per session)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml
from tests.training.synthetic_project import build_workspace

from propensity.registry.registry import Registry
from propensity.training.pipeline import train_project
from propensity.workspace import Workspace


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("serve")
    build_workspace(root, customers=600, days=150, seed=5)
    spec = yaml.safe_load((root / "propensity.yaml").read_text())
    spec["actions"] = [{"template": "buy"}, {"template": "churn"}]
    (root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    ws = Workspace.open(root)
    result = train_project(ws, write_report=False)
    Registry(ws).set_production(result.bundle_id, forced=True, reason="test")
    yield ws
