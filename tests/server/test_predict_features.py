"""POST /v1/predict with a `features` object: one row scored as given by the production bundle (here a
labelled table's), validated against its feature schema; unknown or mistyped fields are a 422 naming them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from starlette.testclient import TestClient

from propensity.registry.registry import Registry
from propensity.registry.train import train_table
from propensity.server import ServerState, create_app
from propensity.serving.startup import build_service
from propensity.workspace import Workspace


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, object]]:
    root: Path = tmp_path_factory.mktemp("table-serve")
    rng = np.random.default_rng(0)
    n = 1200
    x = rng.normal(size=n)
    city = rng.choice(["Oslo", "Rome"], size=n)
    y = np.where(rng.random(n) < 1 / (1 + np.exp(-(2 * x + (city == "Rome")))), "Yes", "No")
    ws = Workspace.open(root)
    result = train_table(ws, pa.table({"pages": x, "city": city, "bought": y}), name="sessions", label="bought",
                         folds=3)  # fmt: skip
    Registry(ws).set_production(result.bundle_id, forced=True, reason="test")
    service, _ = build_service(Workspace.open(root))
    with TestClient(
        create_app(ServerState(service=service, workspace=ws)), raise_server_exceptions=False
    ) as c:
        yield c, result.fit


def test_a_row_of_features_is_scored_as_the_bundle_scores_it(served: tuple[TestClient, object]) -> None:
    client, fit = served
    r = client.post("/v1/predict", json={"features": {"pages": 1.2, "city": "Rome"}, "customer_id": "s-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    f = fit.final  # type: ignore[attr-defined]
    x = f.encoder.matrix(pa.table({"pages": [1.2], "city": ["Rome"]}))
    result = body["results"][0]
    assert result["scores"]["sessions"]["probability"] == pytest.approx(
        float(f.calibrator(f.booster.raw(x))[0]), abs=1e-9
    )
    assert result["customer_id"] == "s-1" and body["missing_features"] == []
    assert result["scores"]["sessions"]["segment"] is not None
    r = client.post("/v1/predict", json={"features": {"pages": None}})
    assert r.status_code == 200 and r.json()["missing_features"] == ["city"]


def test_unknown_and_mistyped_features_are_a_422_naming_them(served: tuple[TestClient, object]) -> None:
    client, _ = served
    r = client.post("/v1/predict", json={"features": {"pages": "many", "town": "Oslo", "city": 3}})
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    fields = {e["field"] for e in err["errors"]}
    assert fields == {"features.pages", "features.town", "features.city"}
    assert "a number is expected" in err["message"] and "not a feature" in err["message"]
    r = client.post("/v1/predict", json={"features": {"pages": 1.0}, "customer_ids": ["a"]})
    assert r.status_code == 422
