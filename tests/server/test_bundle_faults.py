"""The registry's fault suite: a corrupted bundle at every registry operation (promote, rollback, canary, serve
start-up, retrain promotion). Production keeps serving, the pointer never moves to a bundle that cannot be loaded,
and recovery works from the command line (issue 19, items 3 and 4)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from tests.server.bundles import copy_workspace, corrupt_bundle
from typer.testing import CliRunner

from propensity.cli.app import app
from propensity.core.errors import PropensityError
from propensity.registry.bundle import CorruptBundleError
from propensity.registry.gate import PromotionRefusedError, promote
from propensity.registry.registry import Registry, RegistryError
from propensity.retraining.history import history
from propensity.retraining.retrain import retrain
from propensity.server import ServerState, create_app
from propensity.serving.startup import build_service, production_model
from propensity.workspace import Workspace

pytestmark = pytest.mark.slow


@pytest.fixture
def fresh(two_bundle_workspace: tuple[Workspace, str, str], tmp_path: Path) -> tuple[Workspace, str, str]:
    """A private copy: (workspace, production id, candidate id)."""
    source, production, candidate = two_bundle_workspace
    return copy_workspace(source, tmp_path / "ws"), production, candidate


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def cli(ws: Workspace, *args: str) -> Ran:
    """The command in this process (as `propensity` runs it: our errors are exit 1 with the message)."""
    result = CliRunner(env={"COLUMNS": "300"}).invoke(app, [*args, "-w", str(ws.root)])
    if isinstance(result.exception, PropensityError):
        return Ran(1, result.stdout, f"error: {result.exception}")
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


@contextmanager
def serving(ws: Workspace) -> Iterator[TestClient]:
    service, _ = build_service(ws)
    with TestClient(
        create_app(ServerState(service=service, workspace=ws)), raise_server_exceptions=False
    ) as c:
        yield c


def served(client: TestClient) -> str:
    r = client.get("/v1/predict?customer_id=c7")
    assert r.status_code == 200, r.text
    return str(r.json()["model_version"])


def test_rollback_to_a_corrupt_bundle_leaves_production_where_it_was(
    fresh: tuple[Workspace, str, str],
) -> None:
    """Item 3: the pointer moved to the corrupt bundle before loading it (409, yet the next serve exited 1)."""
    ws, first, second = fresh
    with serving(ws) as client:
        rollback_over_http(ws, first, second, client)
    registry = Registry(ws)
    before = registry.history()
    with pytest.raises(CorruptBundleError, match=f"cannot roll back to {first}.*Production stays {second}"):
        registry.rollback()
    out = subprocess.run(  # the real command, once: exit 1 and a message, not a traceback
        [sys.executable, "-m", "propensity", "models", "rollback", "-w", str(ws.root)],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"},
    )  # fmt: skip
    assert out.returncode == 1 and "corrupted" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert registry.production() == second and registry.history() == before
    assert {e.id: e.stage for e in registry.entries()} == {first: "archived", second: "production"}
    model = production_model(ws)  # the next `serve` starts on production
    assert model is not None and model.version == second


def rollback_over_http(ws: Workspace, first: str, second: str, client: TestClient) -> None:
    registry = Registry(ws)
    r = client.post(f"/v1/models/{second}/promote", json={"force": True, "reason": "fault suite"})
    assert r.status_code == 200, r.text
    assert registry.production() == second and served(client) == second
    corrupt_bundle(ws, first)  # the rollback target
    r = client.post("/v1/models/rollback")
    assert r.status_code == 409 and "corrupted" in r.json()["error"]["message"], r.text
    assert registry.production() == second and served(client) == second


def test_a_corrupt_production_bundle_is_replaced_from_the_cli(fresh: tuple[Workspace, str, str]) -> None:
    """Item 4: a corrupt production bundle blocked every promotion, even --force --reason."""
    ws, production, candidate = fresh
    registry = Registry(ws)
    corrupt_bundle(ws, production)
    with pytest.raises(CorruptBundleError, match="Recover from the command line"):
        production_model(ws)  # serve start-up says how to recover
    out = cli(ws, "models", "promote", candidate)
    assert out.returncode == 1 and f"production {production} is corrupted" in out.stderr, out.stderr
    assert "--force --reason" in out.stderr and registry.production() == production
    out = cli(
        ws, "models", "promote", candidate, "--force", "--reason", "production bundle corrupted on disk"
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert registry.production() == candidate
    last = registry.history()[-1]
    assert last["event"] == "promote" and last["forced"] is True and last["previous"] == production
    assert last["reason"] == "production bundle corrupted on disk"
    assert any("corrupted" in note for note in last["gate"]["notes"])
    model = production_model(ws)
    assert model is not None and model.version == candidate


def test_a_corrupt_first_production_bundle_with_nothing_to_roll_back_to(
    fresh: tuple[Workspace, str, str],
) -> None:
    """Item 4: rollback said there was nothing to roll back to, and the healthy bundle was archived (not a
    candidate), so nothing could be promoted either."""
    ws, first, second = fresh
    registry = Registry(ws)
    promote(ws, second, force=True, reason="fault suite")
    registry.rollback()  # first is production again, second archived; first's chain ends here
    corrupt_bundle(ws, first)
    out = cli(ws, "models", "rollback")
    assert out.returncode == 1 and "nothing to roll back to" in out.stderr, out.stderr
    assert f"{first} is corrupted" in out.stderr and "--force --reason" in out.stderr
    out = cli(ws, "models", "promote", second)
    assert out.returncode == 1 and "archived" in out.stderr and registry.production() == first
    out = cli(ws, "models", "promote", second, "--force", "--reason", "first bundle corrupted")
    assert out.returncode == 0, out.stdout + out.stderr
    assert registry.production() == second
    assert {e.id: e.stage for e in registry.entries()} == {first: "archived", second: "production"}


def test_a_corrupt_candidate_never_reaches_production(fresh: tuple[Workspace, str, str]) -> None:
    """Promote (HTTP, CLI, API, forced or not), canary and serve start-up with a corrupt candidate."""
    ws, production, candidate = fresh
    registry = Registry(ws)
    corrupt_bundle(ws, candidate)
    with serving(ws) as client:  # start-up is not blocked by a corrupt candidate
        corrupt_candidate_over_http(production, candidate, client)
    out = cli(ws, "models", "promote", candidate, "--force", "--reason", "fault suite")
    assert out.returncode == 1 and "corrupted" in out.stderr, out.stderr
    with pytest.raises(CorruptBundleError):
        registry.set_production(candidate, forced=True, reason="fault suite")
    assert registry.production() == production and registry.stage(candidate) == "candidate"


def corrupt_candidate_over_http(production: str, candidate: str, client: TestClient) -> None:
    assert served(client) == production
    r = client.post(f"/v1/models/{candidate}/promote", json={"force": True, "reason": "fault suite"})
    assert r.status_code == 409 and "corrupted" in r.json()["error"]["message"], r.text
    r = client.post("/v1/models/canary", json={"model_version": candidate, "share": 0.5})
    assert r.status_code == 409 and "corrupted" in r.json()["error"]["message"], r.text
    assert served(client) == production and client.get("/v1/models").json()["serving"]["canary"] is None


def test_retrain_with_a_corrupt_challenger_keeps_production(fresh: tuple[Workspace, str, str]) -> None:
    ws, production, candidate = fresh
    registry = Registry(ws)
    corrupt_bundle(ws, candidate)
    with pytest.raises(CorruptBundleError):
        retrain(ws, force=True, train=lambda _ws: candidate)
    assert registry.production() == production
    assert history(ws, limit=1)[0]["outcome"] == "failed"
    # With nothing in production (the first promotion skips the comparison), the registry still verifies.
    state = ws.state_dir / "models" / "registry.json"
    text = state.read_text()
    state.write_text(text.replace(f'"production": "{production}"', '"production": null'))
    assert registry.production() is None
    with pytest.raises(PropensityError):
        retrain(ws, force=True, train=lambda _ws: candidate)
    assert registry.production() is None


def test_promotion_refusals_name_the_way_out(fresh: tuple[Workspace, str, str]) -> None:
    ws, production, candidate = fresh
    corrupt_bundle(ws, production)
    with pytest.raises(PromotionRefusedError, match="--force --reason"):
        promote(ws, candidate)
    with pytest.raises(RegistryError, match="needs --reason"):
        promote(ws, candidate, force=True)
    assert Registry(ws).production() == production
