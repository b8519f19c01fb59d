"""Webhook destination against a real local receiver: changed decisions only, once per key, through outages
and crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from tests.activation.destinations_fixtures import Receiver, canonical_rows

from propensity.activation.destinations.base import PublishRun
from propensity.activation.destinations.webhook import Webhook
from propensity.config.destinations import WebhookDestination

N = 30


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def _hook(tmp_path: Path, receiver: Receiver, **overrides: object) -> Webhook:
    spec = WebhookDestination.model_validate(
        {"name": "crm", "url": receiver.url, "base_delay_s": 0.0, "max_delay_s": 0.0, **overrides}
    )
    return Webhook(spec, tmp_path / "crm.outbox.sqlite")


def test_one_record_per_customer_with_its_idempotency_key(tmp_path: Path, receiver: Receiver) -> None:
    rows = canonical_rows(N)
    report = _hook(tmp_path, receiver).publish(PublishRun.from_rows(rows), rows)
    assert (report.status, report.accepted, report.details["changed"]) == ("delivered", N, N)
    assert receiver.keys() == {f"crm:run-1:c{i}": 1 for i in range(N)}
    body = next(b for b in receiver.bodies() if b["customer_id"] == "c0")
    assert set(body["scores"]) == {"buy_7d", "churn_30d"}
    assert body["expiration_at"] == "2026-03-02T12:00:00Z"


def test_only_changed_decisions_go_out_and_a_rerun_sends_nothing(tmp_path: Path, receiver: Receiver) -> None:
    hook = _hook(tmp_path, receiver)
    scores = np.full(2 * N, 0.5)
    first = canonical_rows(N, run_id="r1", scores=scores)
    hook.publish(PublishRun.from_rows(first), first)
    assert hook.publish(PublishRun.from_rows(first), first).sent == 0  # the same run again
    moved = scores.copy()
    moved[:N] += 0.01  # every buy score moves a little, within the same segment: no decision changes
    moved[3] = 0.95  # c3's buy_7d becomes "high": its decision changes
    second = canonical_rows(N, run_id="r2", scores=moved)
    report = hook.publish(PublishRun.from_rows(second), second)
    assert report.details["changed"] == 1
    assert receiver.keys()["crm:r2:c3"] == 1
    assert len(receiver.received) == N + 1


def test_control_customers_are_not_sent(tmp_path: Path, receiver: Receiver) -> None:
    rows = canonical_rows(N, holdout_group="control")
    assert _hook(tmp_path, receiver).publish(PublishRun.from_rows(rows), rows).sent == 0
    assert receiver.received == []


def test_receiver_down_for_a_while_is_delivered_later_exactly_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    hook = _hook(tmp_path, receiver, max_attempts=10, attempts_per_sync=2, concurrency=1)
    rows = canonical_rows(N)
    receiver.stop()
    down = hook.publish(PublishRun.from_rows(rows), rows)
    assert (down.status, down.accepted) == ("failed", 0)
    assert "wait for the next sync" in down.message
    # Another run arrives while it is still down: its unchanged decisions add nothing.
    later = canonical_rows(N, run_id="run-2")
    assert hook.publish(PublishRun.from_rows(later), later).details["changed"] == 0
    receiver.start()
    up = hook.publish(PublishRun.from_rows(later), later)
    assert (up.status, up.accepted) == ("delivered", N)
    assert receiver.keys() == {f"crm:run-1:c{i}": 1 for i in range(N)}
    assert not hook.outbox.dead_letter_path.exists()


def test_a_receiver_down_too_long_ends_in_the_dead_letter_file(tmp_path: Path, receiver: Receiver) -> None:
    hook = _hook(tmp_path, receiver, max_attempts=2, attempts_per_sync=2, concurrency=1)
    rows = canonical_rows(3)
    receiver.stop()
    report = hook.publish(PublishRun.from_rows(rows), rows)
    assert report.details["dead_lettered"] == 1  # the first record used up its attempts; the rest wait
    dead = [json.loads(line) for line in hook.outbox.dead_letter_path.read_text().splitlines()]
    assert dead[0]["key"] == "crm:run-1:c0" and dead[0]["attempts"] == 2
    assert str(hook.outbox.dead_letter_path) in report.message


_CRASHING_PUBLISH = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from tests.activation.destinations_fixtures import canonical_rows
    from propensity.activation.destinations.base import PublishRun
    from propensity.activation.destinations.webhook import Webhook
    from propensity.config.destinations import WebhookDestination

    spec = WebhookDestination(name="crm", url=sys.argv[2], concurrency=1)
    hook = Webhook(spec, Path(sys.argv[1]))
    real_post = None
    import httpx
    sent = 0
    original = httpx.Client.post
    def post(self, *args, **kwargs):
        global sent
        sent += 1
        if sent == 12:
            print("crash now", flush=True)
            time.sleep(60)  # killed here, in the middle of the export
        return original(self, *args, **kwargs)
    httpx.Client.post = post
    rows = canonical_rows(40)
    hook.publish(PublishRun.from_rows(rows), rows)
    """
)


def test_kill_9_mid_export_then_resume_delivers_everything_once(tmp_path: Path, receiver: Receiver) -> None:
    repo = Path(__file__).resolve().parents[2]
    outbox = tmp_path / "crm.outbox.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_PUBLISH, str(outbox), receiver.url, str(repo)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "crash now"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(receiver.received) == 11
    hook = Webhook(WebhookDestination(name="crm", url=receiver.url), outbox)
    rows = canonical_rows(40)
    report = hook.publish(PublishRun.from_rows(rows), rows)  # the same run, published again after the crash
    assert report.details["changed"] == 0  # everything was enqueued before the crash
    assert report.accepted == 29
    assert receiver.keys() == {f"crm:run-1:c{i}": 1 for i in range(40)}
