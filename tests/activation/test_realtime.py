"""Real-time activation: rescored customers' decisions reach realtime destinations only when they change."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.activation.destinations_fixtures import Receiver
from tests.services import RedisServer

from propensity.activation.realtime import RealtimeActivator, prediction_rows
from propensity.core.score_row import SCORE_ROW_SCHEMA
from propensity.workspace import Workspace


def _prediction(
    cid: str, buy: float, churn: float | None, *, age_s: float = 0.0, ttl_s: float = 900
) -> dict[str, Any]:
    """Shaped like ScoringService.predict's answer."""
    now = datetime.now(UTC) - timedelta(seconds=age_s)

    def entry(p: float | None) -> dict[str, Any]:
        if p is None:
            return {
                "probability": None,
                "percentile": None,
                "segment": None,
                "eligible": False,
                "fallback": False,
            }
        pct = p * 100
        segment = "high" if pct >= 80 else "medium" if pct >= 40 else "low"
        return {"probability": p, "percentile": pct, "segment": segment, "eligible": True, "fallback": False}

    return {
        "customer_id": cid, "model_version": "b1", "feature_set_version": "fs1",
        "scored_at": now.isoformat().replace("+00:00", "Z"),
        "expiration_at": (now + timedelta(seconds=ttl_s)).isoformat().replace("+00:00", "Z"),
        "cold_start": False, "fallback": False, "canary": False,
        "scores": {"buy_7d": entry(buy), "churn_30d": entry(churn)},
    }  # fmt: skip


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def _workspace(root: Path, receiver: Receiver, redis_url: str | None = None) -> Workspace:
    text = f"""
destinations:
  - {{name: drop, type: file}}
  - {{name: crm, type: webhook, url: "{receiver.url}", realtime: true, base_delay_s: 0, max_delay_s: 0}}
  - {{name: batch_only, type: webhook, url: "{receiver.url}/batch"}}
"""
    if redis_url:
        text += f"  - {{name: session, type: profile, redis_url: '{redis_url}', prefix: act-rt, realtime: true}}\n"
    (root / "propensity.yaml").write_text(text, encoding="utf-8")
    return Workspace.open(root)


def test_prediction_rows_are_canonical_score_rows() -> None:
    rows = prediction_rows([_prediction("c1", 0.7, None)])
    assert rows.schema.equals(SCORE_ROW_SCHEMA)
    by_action = {r["action"]: r for r in rows.to_pylist()}
    assert by_action["buy_7d"]["score"] == 0.7 and by_action["buy_7d"]["eligible"] is True
    assert by_action["churn_30d"]["score"] is None and by_action["churn_30d"]["eligible"] is False
    assert by_action["buy_7d"]["scoring_run_id"].startswith("rt-")


@pytest.mark.service
def test_only_changed_decisions_reach_realtime_destinations(
    tmp_path: Path, receiver: Receiver, redis_server: RedisServer
) -> None:
    ws = _workspace(tmp_path, receiver, redis_server.url)
    activator = RealtimeActivator(ws)
    assert sorted(d.name for d in activator.destinations) == ["crm", "session"]
    try:
        first = {c: _prediction(c, 0.9, 0.2) for c in ("c1", "c2", "c3")}
        report = activator.on_customers_changed(list(first), first)
        assert report.changed == {"crm": 3, "session": 3}
        assert activator.flush(10)
        assert sorted(b["customer_id"] for b in receiver.bodies()) == ["c1", "c2", "c3"]
        assert activator.destinations[1].read("c2")["next_best_action"] == "buy_7d"  # type: ignore[attr-defined]

        # New events move scores within their segments: no decision changes, nothing is sent.
        same = {c: _prediction(c, 0.91, 0.22) for c in ("c1", "c2", "c3")}
        assert activator.on_customers_changed(list(same), same).changed == {"crm": 0, "session": 0}

        # c2's churn risk becomes high and the policy now picks churn for it: only c2 goes out.
        moved = {"c2": _prediction("c2", 0.3, 0.95)}
        assert activator.on_customers_changed(["c2"], moved).changed == {"crm": 1, "session": 1}
        assert activator.flush(10)
        assert [b["customer_id"] for b in receiver.bodies()][3:] == ["c2"]
        profile = activator.destinations[1].read("c2")  # type: ignore[attr-defined]
        assert profile["segment_churn_30d"] == "high"
        assert not any(r.path.endswith("/batch") for r in receiver.received)  # not a realtime destination
    finally:
        activator.close()


def test_customers_not_named_are_ignored_and_expired_predictions_never_sent(
    tmp_path: Path, receiver: Receiver
) -> None:
    ws = _workspace(tmp_path, receiver)
    activator = RealtimeActivator(ws, background=False)
    preds = {"c1": _prediction("c1", 0.9, 0.1), "c2": _prediction("c2", 0.9, 0.1, age_s=120, ttl_s=60)}
    report = activator.on_customers_changed(["c1", "c2", "c9"], preds)
    assert report.changed == {"crm": 1}
    assert [b["customer_id"] for b in receiver.bodies()] == ["c1"]
    activator.on_customers_changed(
        ["c1"], {"c1": _prediction("c1", 0.1, 0.95), "c5": _prediction("c5", 0.5, 0.5)}
    )
    assert [b["customer_id"] for b in receiver.bodies()] == ["c1", "c1"]


def test_a_receiver_that_is_down_gets_the_decisions_later_exactly_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    ws = _workspace(tmp_path, receiver)
    receiver.stop()
    activator = RealtimeActivator(ws, retry_interval_s=0.05)
    try:
        preds = {c: _prediction(c, 0.9, 0.1) for c in ("c1", "c2")}
        activator.on_customers_changed(list(preds), preds)
        assert activator.flush(10)
        assert receiver.received == []
        receiver.start()
        # No new events: the background thread retries the waiting records by itself.
        hook = activator.destinations[0]
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while hook.outbox.counts()["pending"] and datetime.now(UTC) < deadline:  # type: ignore[attr-defined]
            time.sleep(0.02)  # polling the outbox with a deadline, not waiting a guessed time
        assert sorted(receiver.keys().values()) == [1, 1]
        assert sorted(b["customer_id"] for b in receiver.bodies()) == ["c1", "c2"]
    finally:
        activator.close()


def test_control_group_customers_get_no_realtime_decision(tmp_path: Path, receiver: Receiver) -> None:
    from propensity.config.experiments import Holdout
    from propensity.core.holdout import group

    _workspace(tmp_path, receiver)
    text = (
        tmp_path / "propensity.yaml"
    ).read_text() + "experiments:\n  holdouts: [{name: rt, control_share: 0.3}]\n"
    (tmp_path / "propensity.yaml").write_text(text, encoding="utf-8")
    ws = Workspace.open(tmp_path)
    ids = [f"h{i}" for i in range(60)]
    control = {c for c in ids if group(c, Holdout(name="rt", control_share=0.3)) == "control"}
    assert 0 < len(control) < len(ids)
    rows = prediction_rows([_prediction(c, 0.9, 0.2) for c in ids], ws.spec.experiments)
    assert {r["customer_id"] for r in rows.to_pylist() if r["holdout_group"] == "control"} == control
    activator = RealtimeActivator(ws, background=False)
    try:
        activator.on_customers_changed(ids, {c: _prediction(c, 0.9, 0.2) for c in ids})
        sent = {b["customer_id"] for b in receiver.bodies()}
        assert sent == set(ids) - control  # delivered synchronously (no background thread)
    finally:
        activator.close()
