"""`propensity activate` end to end: runs in the real score store, gates, every destination against real
receivers, idempotence per (run, destination), blocked and forced runs, freshness, the micro-batch loop."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from tests.activation.destinations_fixtures import (
    Receiver,
    canonical_rows,
    store_run,
    workspace_with_attributes,
)
from tests.services import RedisServer
from typer.testing import CliRunner

from propensity.activation.delivery import Outbox
from propensity.activation.destinations import state_dir
from propensity.activation.run import activate, activate_every
from propensity.cli.app import app
from propensity.scoring.score_store import open_score_store
from propensity.workspace import Workspace

N = 120
runner = CliRunner(env={"COLUMNS": "200"})


def _people() -> dict[str, dict[str, str]]:
    people = {}
    for i in range(N):
        consent = "true" if i % 4 else "false"
        people[f"c{i}"] = {
            "email": f"p{i}@example.com",
            "phone": f"+1 415 555 {i:04d}",
            "consent_ads": consent,
        }
    return people


def _yaml(receiver: Receiver, redis_url: str | None = None) -> str:
    text = f"""
destinations:
  - {{name: drop, type: file, format: csv}}
  - {{name: crm, type: webhook, url: "{receiver.url}", base_delay_s: 0, max_delay_s: 0}}
  - name: buyers
    type: audience
    url: "{receiver.url.replace("/hook", "/audience")}"
    action: buy_7d
    segments: [high, medium]
    consent_attribute: consent_ads
"""
    if redis_url:
        text += f"  - {{name: session, type: profile, redis_url: '{redis_url}', prefix: act-cli}}\n"
    return text


def _scores(seed: int, shift: float = 0.0) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).beta(2, 4, 2 * N) + shift, 0.0, 1.0)


def _rows(run_id: str, minutes_ago: float, *, seed: int = 0, shift: float = 0.0, scores: np.ndarray | None = None,
          ttl: timedelta = timedelta(days=1)) -> pa.Table:  # fmt: skip
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes_ago)
    return canonical_rows(N, run_id=run_id, scored_at=at, ttl=ttl,
                          scores=_scores(seed, shift) if scores is None else scores)  # fmt: skip


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def ws(tmp_path: Path, receiver: Receiver) -> Workspace:
    return workspace_with_attributes(tmp_path, _people(), _yaml(receiver))


def _webhook_keys(receiver: Receiver) -> list[str]:
    return [r.key for r in receiver.received if r.path == "/hook" and r.key]


@pytest.mark.service
def test_a_run_reaches_every_destination_once(
    tmp_path: Path, receiver: Receiver, redis_server: RedisServer
) -> None:
    ws = workspace_with_attributes(tmp_path, _people(), _yaml(receiver, redis_server.url))
    store_run(ws, _rows("r1", 5))
    result = activate(ws)
    assert result.ok, [r.to_json() for r in result.reports]
    by_name = {r.destination: r for r in result.reports}
    assert set(by_name) == {"drop", "crm", "buyers", "session"}
    assert by_name["crm"].accepted == N
    assert by_name["session"].accepted == N
    assert by_name["buyers"].accepted > 0
    assert (tmp_path / "exports" / "drop" / "r1" / "manifest.json").exists()
    seen = len(receiver.received)

    again = activate(ws)  # the same run again: nothing new goes anywhere
    assert [r.status for r in again.reports] == ["skipped"] * 4
    assert len(receiver.received) == seen

    result = runner.invoke(app, ["destinations", "status", "-w", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "crm" in result.output and "r1" in result.output and "0 pending" in result.output
    assert f"{by_name['buyers'].details['audience_size']} customers in the audience" in result.output


def test_a_collapsed_run_is_blocked_and_publishes_nothing(ws: Workspace, receiver: Receiver) -> None:
    store_run(ws, _rows("r1", 10))
    assert activate(ws).ok
    seen = len(receiver.received)
    store_run(ws, _rows("r2", 5, scores=np.full(2 * N, 0.42)))

    result = runner.invoke(app, ["activate", "-w", str(ws.root)])
    assert result.exit_code == 1
    assert "blocked" in result.output and "collapse" in result.output
    assert len(receiver.received) == seen  # not one record, not one hash
    assert not (ws.root / "exports" / "drop" / "r2").exists()
    run = open_score_store(ws).get_run("r2")
    assert run.status == "blocked"
    assert run.details["gates"]["blocked"] is True
    saved = json.loads((state_dir(ws) / "gates" / "r2.json").read_text())
    assert "collapse" in {c["name"] for c in saved["checks"] if not c["passed"]}


def test_a_drifted_run_is_blocked_until_forced_with_a_reason(ws: Workspace, receiver: Receiver) -> None:
    store_run(ws, _rows("r1", 10, seed=1))
    assert activate(ws).ok
    store_run(ws, _rows("r2", 5, seed=2, shift=0.35))
    blocked = runner.invoke(app, ["activate", "-w", str(ws.root)])
    assert blocked.exit_code == 1 and "psi" in blocked.output
    assert not any("r2" in k for k in _webhook_keys(receiver))

    no_reason = runner.invoke(app, ["activate", "-w", str(ws.root), "--force"])
    assert no_reason.exit_code == 2 and "--reason" in no_reason.output

    forced = runner.invoke(
        app, ["activate", "-w", str(ws.root), "--force", "--reason", "price change, expected"]
    )
    assert forced.exit_code == 0, forced.output
    assert "forced: price change, expected" in forced.output
    assert any("r2" in k for k in _webhook_keys(receiver))
    assert open_score_store(ws).get_run("r2").status == "complete"
    overrides = (state_dir(ws) / "gates" / "overrides.jsonl").read_text()
    assert "price change, expected" in overrides


def test_the_previous_run_for_drift_is_the_last_published_one(ws: Workspace) -> None:
    store_run(ws, _rows("r1", 15, seed=1))
    assert activate(ws).ok
    store_run(ws, _rows("r2", 10, scores=np.full(2 * N, 0.42)))  # blocked: not a reference for later runs
    assert activate(ws).blocked
    store_run(ws, _rows("r3", 5, seed=3))
    result = activate(ws)
    assert result.ok and result.gates.previous_run_id == "r1"


def test_expired_rows_are_never_exported(ws: Workspace, receiver: Receiver) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    fresh = canonical_rows(
        [f"c{i}" for i in range(0, N, 2)], run_id="r1", scored_at=at, ttl=timedelta(days=1)
    )
    stale = canonical_rows(
        [f"c{i}" for i in range(1, N, 2)], run_id="r1", scored_at=at, ttl=timedelta(hours=1)
    )
    store_run(ws, pa.concat_tables([fresh, stale]))
    result = activate(ws)
    assert result.ok and result.expired_rows == stale.num_rows
    exported = pacsv.read_csv(ws.root / "exports" / "drop" / "r1" / "scores.csv")
    assert set(exported.column("customer_id").to_pylist()) == {f"c{i}" for i in range(0, N, 2)}
    assert {"scored_at", "expiration_at"} <= set(exported.column_names)
    sent = {r.body["customer_id"] for r in receiver.received if r.path == "/hook"}
    assert sent == {f"c{i}" for i in range(0, N, 2)}


def test_one_destination_can_be_chosen_and_unknown_names_are_explained(
    ws: Workspace, receiver: Receiver
) -> None:
    store_run(ws, _rows("r1", 5))
    ok = runner.invoke(app, ["activate", "-w", str(ws.root), "-d", "drop"])
    assert ok.exit_code == 0, ok.output
    assert receiver.received == []
    bad = runner.invoke(app, ["activate", "-w", str(ws.root), "-d", "nope"])
    assert bad.exit_code == 1
    assert "unknown destination(s) nope; declared: buyers, crm, drop" in str(bad.exception)


def test_no_run_yet_is_a_clear_refusal(ws: Workspace) -> None:
    result = runner.invoke(app, ["activate", "-w", str(ws.root)])
    assert result.exit_code == 1
    assert "propensity score" in str(result.exception)


def test_destinations_list_shows_what_is_declared(ws: Workspace) -> None:
    result = runner.invoke(app, ["destinations", "list", "-w", str(ws.root)])
    assert result.exit_code == 0
    for name in ("drop", "crm", "buyers"):
        assert name in result.output


def test_micro_batch_activates_each_new_run_and_nothing_twice(ws: Workspace, receiver: Receiver) -> None:
    store_run(ws, _rows("r1", 10, seed=1))
    outcomes: list[object] = []
    assert activate_every(ws, 0.0, ticks=2, on_tick=lambda r, e: outcomes.append(r or e)) == 2
    first, second = outcomes
    assert [r.status for r in first.reports] == ["delivered"] * 3  # type: ignore[attr-defined]
    assert [r.status for r in second.reports] == ["skipped"] * 3  # type: ignore[attr-defined]
    assert len(_webhook_keys(receiver)) == N

    store_run(ws, _rows("r2", 5, seed=2))
    result = runner.invoke(app, ["activate", "-w", str(ws.root), "--every", "1s", "--max-ticks", "1"])
    assert result.exit_code == 0, result.output
    assert "stopped after 1 tick(s)" in result.output
    assert (ws.root / "exports" / "drop" / "r2" / "manifest.json").exists()


def test_micro_batch_carries_on_after_a_failed_tick(ws: Workspace) -> None:
    errors: list[Exception | None] = []
    activate_every(ws, 0.0, ticks=2, on_tick=lambda r, e: errors.append(e))
    assert len(errors) == 2 and all(e is not None and "propensity score" in str(e) for e in errors)


def test_every_takes_a_duration(ws: Workspace) -> None:
    result = runner.invoke(app, ["activate", "-w", str(ws.root), "--every", "soon"])
    assert result.exit_code == 2 and "not a duration" in result.output


@pytest.mark.slow
def test_quickstart_exports_its_run_and_activate_score_publishes_the_next(tmp_path: Path) -> None:
    from propensity.registry.registry import Registry

    ws_dir = tmp_path / "qs"
    result = runner.invoke(
        app, ["quickstart", "-w", str(ws_dir), "--customers", "300", "--days", "150", "--no-serve"]
    )
    assert result.exit_code == 0, result.output
    ws = Workspace.open(ws_dir)
    first = open_score_store(ws).latest_run()
    assert first is not None
    manifest = json.loads((ws_dir / "exports" / "drop" / first.run_id / "manifest.json").read_text())
    assert manifest["row_count"] == first.rows and manifest["contract_version"] == first.contract_version
    assert f"exported run {first.run_id}" in result.output.replace("\n", " ")

    # Quickstart puts its first bundle in production even with --no-serve, so scoring works right after it.
    assert Registry(ws).production() == Registry(ws).entries()[0].id
    scored = runner.invoke(app, ["activate", "-w", str(ws_dir), "--score"])
    second = open_score_store(ws).latest_run()
    assert second is not None and second.run_id != first.run_id
    if scored.exit_code == 1:
        # Scoring now, a week or more after the synthetic data ends, usually moves the scores: the gates catch
        # it, nothing is exported, and an override publishes it.
        assert "psi[" in scored.output or "row_count" in scored.output, scored.output
        assert open_score_store(ws).get_run(second.run_id).status == "blocked"
        assert not (ws_dir / "exports" / "drop" / second.run_id).exists()
        forced = runner.invoke(
            app, ["activate", "-w", str(ws_dir), "--force", "--reason", "scored after the data"]
        )
        assert forced.exit_code == 0, forced.output
    else:
        assert scored.exit_code == 0, scored.output
    assert (ws_dir / "exports" / "drop" / second.run_id / "manifest.json").exists()


def test_a_receiver_down_during_activation_gets_the_run_on_the_next_activation(
    ws: Workspace, receiver: Receiver
) -> None:
    store_run(ws, _rows("r1", 5))
    receiver.stop()
    down = runner.invoke(app, ["activate", "-w", str(ws.root)])
    assert down.exit_code == 1
    status = runner.invoke(app, ["destinations", "status", "-w", str(ws.root)])
    assert f"{N} pending" in status.output
    receiver.start()
    up = runner.invoke(app, ["activate", "-w", str(ws.root)])
    assert up.exit_code == 0, up.output
    assert sorted(_webhook_keys(receiver)) == sorted(f"crm:r1:c{i}" for i in range(N))
    assert "0 pending" in runner.invoke(app, ["destinations", "status", "-w", str(ws.root)]).output


def test_dead_lettered_records_fail_activation_until_retried_exactly_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Issue 19 item 7: records dead-lettered during an outage were never retried after recovery, and the next
    `activate` exited 0. Now every activation says so and exits 1 until `destinations retry` delivers them."""
    hook = f'{{name: crm, type: webhook, url: "{receiver.url}", max_attempts: 1, base_delay_s: 0}}'
    ws = workspace_with_attributes(tmp_path, _people(), f"destinations:\n  - {hook}\n")
    store_run(ws, _rows("r1", 10))
    receiver.stop()  # an outage: the records in flight use up their only attempt, the rest wait
    down = runner.invoke(app, ["activate", "-w", str(ws.root)])
    assert down.exit_code == 1 and "destinations retry crm" in down.output, down.output
    dead = Outbox(state_dir(ws) / "crm.outbox.sqlite").counts()["dead"]
    assert dead >= 1
    receiver.start()
    up = runner.invoke(app, ["activate", "-w", str(ws.root)])
    assert up.exit_code == 1, up.output  # exited 0 before, with the records left in the dead letter
    assert f"{dead} dead-lettered record(s)" in up.output and "destinations retry crm" in up.output
    status = runner.invoke(app, ["destinations", "status", "-w", str(ws.root)])
    assert f"{dead} dead" in status.output and "destinations retry crm" in status.output
    assert len(_webhook_keys(receiver)) == N - dead
    retry = runner.invoke(app, ["destinations", "retry", "-w", str(ws.root), "--json"])
    assert retry.exit_code == 0, retry.output
    [report] = json.loads(retry.output)
    assert (report["status"], report["details"]["requeued"], report["accepted"]) == ("delivered", dead, dead)
    assert sorted(_webhook_keys(receiver)) == sorted(f"crm:r1:c{i}" for i in range(N))  # each exactly once
    again = runner.invoke(app, ["destinations", "retry", "crm", "-w", str(ws.root)])
    assert again.exit_code == 0 and "nothing dead-lettered" in again.output, again.output
    assert runner.invoke(app, ["activate", "-w", str(ws.root)]).exit_code == 0
    assert len(receiver.received) == N
    assert runner.invoke(app, ["destinations", "retry", "nope", "-w", str(ws.root)]).exit_code != 0
