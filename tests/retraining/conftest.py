"""A small synthetic workspace for the retraining tests, and ways to train a strong or a deliberately weak
challenger on it (built once per session)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from tests.training.synthetic_project import build_workspace

from propensity.registry.train import train_project
from propensity.workspace import Workspace

# The weak model sees one attribute only: the same rows, far less signal.
WEAK_FEATURES = ("region",)


def weakened(ws: Workspace) -> Workspace:
    """The workspace as seen by a trainer that lost every feature but ``WEAK_FEATURES``."""
    features = [f for f in ws.spec.features if f.name in WEAK_FEATURES]
    return Workspace(ws.root, ws.spec.model_copy(update={"features": features}))


def train_full(ws: Workspace) -> str:
    return train_project(ws, write_report=False).bundle_id


def train_weak(ws: Workspace) -> str:
    return train_project(weakened(ws), write_report=False).bundle_id


@pytest.fixture(scope="session")
def retrain_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("retrain")
    build_workspace(root, customers=500, days=150, seed=7)
    spec = yaml.safe_load((root / "propensity.yaml").read_text())
    spec["actions"] = [{"template": "buy"}]
    spec["retraining"] = {"window": "28d"}
    (root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    yield root
