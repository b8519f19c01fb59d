"""A small trained workspace with a production bundle, shared by the server tests (built once per session), and
the same with a second, different candidate bundle (never changed: copy it with :func:`copy_workspace`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml
from tests.server.bundles import copy_workspace
from tests.training.synthetic_project import trained_workspace

from propensity.registry.registry import Registry
from propensity.registry.train import train_project
from propensity.workspace import Workspace


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    yield trained_workspace(
        tmp_path_factory.mktemp("serve"), customers=600, days=150, seed=5,
        spec={"actions": [{"template": "buy"}, {"template": "churn"}]},
    )  # fmt: skip


@pytest.fixture(scope="session")
def two_bundle_workspace(
    workspace: Workspace, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Workspace, str, str]:
    """(workspace, production id, candidate id): a copy of ``workspace`` with a second bundle (another seed)
    registered as a candidate. Tests must not change it: they copy it (:func:`copy_workspace`)."""
    ws = copy_workspace(workspace, tmp_path_factory.mktemp("two-bundles") / "ws")
    spec = yaml.safe_load((ws.root / "propensity.yaml").read_text())
    spec["training"] = {"seed": 11}
    (ws.root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    ws = Workspace.open(ws.root)
    production = Registry(ws).production()
    assert production is not None
    candidate = train_project(ws, write_report=False).bundle_id
    assert candidate != production
    return ws, production, candidate
