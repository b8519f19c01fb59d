"""One rule, one place: /v1/predict answers with the tiers of the project's `segments:` section, cut as batch
scoring cut them, so the same score gets the same segment online and in batch (issue 18)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from starlette.testclient import TestClient
from tests.scoring.conftest import AS_OF

from propensity.scoring.batch import score_and_store
from propensity.server import ServerState, create_app
from propensity.serving.startup import build_service
from propensity.workspace import Workspace

CUSTOM = {"names": ["gold", "silver", "bronze", "tin"], "quantiles": [0.9, 0.6, 0.25], "method": "quantile"}


def _copy_with_custom_segments(ws: Workspace, root: Path) -> Workspace:
    shutil.copytree(ws.root, root)
    spec = yaml.safe_load((root / "propensity.yaml").read_text(encoding="utf-8"))
    spec["segments"] = CUSTOM
    (root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return Workspace.open(root)


def _online(ws: Workspace, customers: list[str]) -> dict[tuple[str, str], dict]:
    service, _ = build_service(ws)
    out = {}
    with TestClient(create_app(ServerState(service=service, workspace=ws))) as client:
        for cid in customers:
            r = client.get("/v1/predict", params={"customer_id": cid})
            assert r.status_code == 200, r.text
            out.update({(cid, a): e for a, e in r.json()["scores"].items()})
    return out


@pytest.mark.slow
def test_predict_and_batch_give_the_same_segment_for_the_same_score(
    scoring_workspace: Workspace, tmp_path: Path
) -> None:
    ws = _copy_with_custom_segments(scoring_workspace, tmp_path / "ws")
    batch = score_and_store(ws, as_of=AS_OF)
    rows = batch.rows.filter(batch.rows.column("eligible")).to_pylist()
    modelled = [r for r in rows if not r["fallback"]]
    assert modelled and {r["segment"] for r in modelled} <= set(CUSTOM["names"])

    service, _ = build_service(ws)
    model = service.model
    assert model is not None and model.version == batch.run.model_version
    # Every batch score, asked online, gets its batch segment (the cuts of the latest run of this bundle).
    for r in modelled:
        assert model.segment(model.action_names.index(r["action"]), r["score"]) == r["segment"], r

    # And /v1/predict answers with that rule: the section's names, each probability's tier by the run's cuts.
    customers = sorted({r["customer_id"] for r in modelled})[:25]
    answered = 0
    for (_, action), entry in _online(ws, customers).items():
        if entry["probability"] is None or entry["fallback"]:
            continue
        index = model.action_names.index(action)
        assert entry["segment"] == model.segment(index, entry["probability"]) in CUSTOM["names"]
        answered += 1
    assert answered > 0


@pytest.mark.slow
def test_without_a_run_in_the_sections_tiers_predict_uses_its_quantiles_of_the_test_scores(
    scoring_workspace: Workspace, tmp_path: Path
) -> None:
    # The copied store holds only runs cut with the default tiers (high/medium/low): they do not apply.
    ws = _copy_with_custom_segments(scoring_workspace, tmp_path / "ws")
    customers = [f"c{i}" for i in range(1, 21)]
    segments = {e["segment"] for e in _online(ws, customers).values() if e["probability"] is not None}
    segments.discard(None)
    assert segments and segments <= set(CUSTOM["names"])  # never the old fixed high/medium/low
