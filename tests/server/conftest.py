"""A small trained workspace with a production bundle, shared by the server tests (built once per session)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.training.synthetic_project import trained_workspace

from propensity.workspace import Workspace


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    yield trained_workspace(
        tmp_path_factory.mktemp("serve"), customers=600, days=150, seed=5,
        spec={"actions": [{"template": "buy"}, {"template": "churn"}]},
    )  # fmt: skip
