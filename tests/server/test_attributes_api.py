"""Attributes reach a running server without a restart: ``POST /v1/attributes`` (checked against the attribute
source, durable, applied before the answer) and a reload of the source by ``propensity ingest`` while the server
runs (the server's sync replaces the source's versions, so a changed value wins even at the same valid_from).

What the server sees is read through an eligibility rule on the attribute (``upgrade``: plan not free), whose
answer names the value it read."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from starlette.testclient import TestClient
from tests.serve_process import call, serve_process
from tests.server.bundles import copy_workspace

from propensity.events.log import DuckDBEventLog
from propensity.server import ServerState, create_app
from propensity.serving.startup import build_service
from propensity.workspace import Workspace

UPGRADE = "upgrade_30d"


def _with_upgrade_action(source: Workspace, root: Path) -> Workspace:
    """A copy of the server tests' workspace that also declares ``upgrade`` (eligible unless plan is free)."""
    ws = copy_workspace(source, root)
    spec = yaml.safe_load((ws.root / "propensity.yaml").read_text())
    spec["actions"] = [*spec["actions"], {"template": "upgrade"}]
    (ws.root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return Workspace.open(ws.root)


def _paying_customers(ws: Workspace, n: int) -> list[str]:
    """Customers with events whose latest plan is not free (eligible for upgrade now)."""
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        rows = con.execute(
            "SELECT customer_id FROM attributes WHERE attribute = 'plan' GROUP BY customer_id "
            "HAVING arg_max(value, valid_from) <> 'free' AND customer_id IN (SELECT customer_id FROM events) "
            "ORDER BY customer_id LIMIT ?",
            [n],
        ).fetchall()
    assert len(rows) == n
    return [str(r[0]) for r in rows]


def _attribute_rows(ws: Workspace) -> int:
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        return int(con.execute("SELECT count(*) FROM attributes").fetchall()[0][0])


def _upgrade(answer: dict[str, Any]) -> dict[str, Any]:
    score: dict[str, Any] = answer["scores"][UPGRADE]
    return score


@pytest.fixture(scope="module")
def upgrade_workspace(workspace: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return _with_upgrade_action(workspace, tmp_path_factory.mktemp("attributes") / "ws")


@pytest.fixture(scope="module")
def client(upgrade_workspace: Workspace) -> Iterator[TestClient]:
    service, _ = build_service(upgrade_workspace)
    state = ServerState(service=service, workspace=upgrade_workspace)
    with TestClient(create_app(state), raise_server_exceptions=False) as c:
        yield c


def test_posted_attributes_are_durable_and_read_by_the_next_prediction(
    client: TestClient, upgrade_workspace: Workspace
) -> None:
    cid = _paying_customers(upgrade_workspace, 1)[0]
    before = client.get("/v1/predict", params={"customer_id": cid, "actions": UPGRADE}).json()
    assert _upgrade(before)["eligible"] is True, before
    stored = _attribute_rows(upgrade_workspace)

    r = client.post(
        "/v1/attributes", json={"source": "customers", "rows": [{"customer_id": cid, "plan": "free"}]}
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"source": "customers", "rows": 1, "versions": 1}
    after = _upgrade(client.get("/v1/predict", params={"customer_id": cid, "actions": UPGRADE}).json())
    assert after["eligible"] is False and after["reason"] == (
        "eligibility.attribute: plan is 'free', which not_in excludes"
    )
    assert _attribute_rows(upgrade_workspace) == stored + 1  # in the workspace, not only in memory

    # The source is the only one declared, so it may be left out; numbers and booleans are stored as text.
    r = client.post(
        "/v1/attributes", json={"rows": [{"customer_id": cid, "plan": "pro", "consent_email": True}]}
    )
    assert r.status_code == 200, r.text
    assert r.json()["versions"] == 2
    again = _upgrade(client.get("/v1/predict", params={"customer_id": cid, "actions": UPGRADE}).json())
    assert again["eligible"] is True
    with DuckDBEventLog(upgrade_workspace.db_path).connection(read_only=True) as con:
        consent = con.execute(
            "SELECT value FROM attributes WHERE customer_id = ? AND attribute = 'consent_email' "
            "ORDER BY available_at DESC, valid_from DESC LIMIT 1",
            [cid],
        ).fetchall()
    assert consent == [("true",)]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"rows": [{"customer_id": "c1", "plann": "pro"}]}, "rows[0].plann", "not an attribute of source"),
        ({"rows": [{"customer_id": "c1", "plan": "pro"}, {"plan": "pro"}]}, "rows[1].customer_id", "required"),
        ({"rows": [{"customer_id": "c1", "plan": "pro", "valid_from": "yesterday"}]}, "rows[0].valid_from",
         "ISO 8601"),
        ({"rows": [{"customer_id": "c1"}]}, "rows[0]", "no attribute columns"),
        ({"source": "crm", "rows": [{"customer_id": "c1", "plan": "pro"}]}, "source", "no attribute source 'crm'"),
        ({"rows": [{"customer_id": "c1", "plan": {"tier": "pro"}}]}, "rows[0].plan", ""),
        ({"rows": []}, "rows", ""),
        ({"rows": [{"customer_id": "c1", "plan": "pro"}], "extra": 1}, "extra", ""),
    ],
)  # fmt: skip
def test_rows_that_do_not_fit_the_source_are_a_422_naming_the_field_and_write_nothing(
    client: TestClient, upgrade_workspace: Workspace, body: dict[str, Any], field: str, words: str
) -> None:
    stored = _attribute_rows(upgrade_workspace)
    r = client.post("/v1/attributes", json=body)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == field, error
    assert words in error["message"], error
    assert _attribute_rows(upgrade_workspace) == stored


def _wait_for(check: Any, what: str, timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns a true value (the server's sync runs every second)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"the server did not pick up {what} within {timeout:.0f} s")
        time.sleep(0.2)


@pytest.mark.slow
def test_a_running_server_sees_posted_attributes_and_a_reload_by_the_cli(
    workspace: Workspace, tmp_path: Path
) -> None:
    ws = _with_upgrade_action(workspace, tmp_path / "ws")
    posted, reloaded = _paying_customers(ws, 2)
    with serve_process(ws) as (base, _proc):

        def upgrade(cid: str) -> dict[str, Any]:
            status, answer = call(f"{base}/v1/predict?customer_id={cid}&actions={UPGRADE}")
            assert status == 200, answer
            return _upgrade(answer)

        assert upgrade(posted)["eligible"] is True and upgrade(reloaded)["eligible"] is True
        status, answer = call(f"{base}/v1/attributes", {"rows": [{"customer_id": posted, "plan": "free"}]})
        assert status == 200, answer
        assert upgrade(posted)["eligible"] is False  # at once: applied before the answer
        status, answer = call(f"{base}/v1/attributes", {"rows": [{"customer_id": posted, "plann": "free"}]})
        assert status == 422 and answer["error"]["field"] == "rows[0].plann", answer

        # The source's file changes: the reloaded customer's latest plan becomes free *at the same valid_from*
        # (a correction), so only a replacement of the source's versions, not an added version, shows it.
        path = ws.root / "data" / "customers.parquet"
        table = pq.read_table(path)
        mine = pc.equal(table.column("customer_id").cast("string"), reloaded)
        latest = pc.max(pc.filter(table.column("valid_from"), mine))
        row = pc.and_(mine, pc.equal(table.column("valid_from"), latest))
        plans = pc.if_else(row, "free", table.column("plan").cast("string"))
        table = table.set_column(table.schema.get_field_index("plan"), "plan", plans)
        pq.write_table(table, path)
        subprocess.run([sys.executable, "-m", "propensity", "ingest", "-w", str(ws.root)], check=True,
                       capture_output=True, timeout=300)  # fmt: skip

        gone = _wait_for(lambda: upgrade(reloaded)["eligible"] is False and upgrade(reloaded), "the reload")
        assert gone["reason"] == "eligibility.attribute: plan is 'free', which not_in excludes"
        # A reload replaces every row of the source, the posted one too (the file is the source's truth as of
        # its export): the server agrees with the log, where the posted customer's plan is the file's again.
        assert upgrade(posted)["eligible"] is True
