"""The outbox: durable, idempotent, retried with backoff and jitter, dead-lettered, resumable after a crash."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.activation.destinations_fixtures import Receiver, no_sleep

from propensity.activation.delivery import DeliveryError, Outbox, OutboxRecord


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def _fill(outbox: Outbox, n: int) -> None:
    outbox.enqueue_many(OutboxRecord(f"k{i}", {"i": i}) for i in range(n))


def test_each_key_is_delivered_once_with_its_idempotency_key(tmp_path: Path, receiver: Receiver) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    _fill(outbox, 30)
    assert outbox.enqueue("k3", {"i": "other"}) is False  # a known key is not stored twice
    report = outbox.deliver(receiver.url, sleep=no_sleep)
    assert (report.delivered, report.pending, report.dead_lettered) == (30, 0, 0)
    again = outbox.deliver(receiver.url, sleep=no_sleep)
    assert again.attempted == 0
    assert receiver.keys() == {f"k{i}": 1 for i in range(30)}
    assert sorted(b["i"] for b in receiver.bodies()) == list(range(30))


def test_receiver_down_for_a_while_gets_everything_later_exactly_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    _fill(outbox, 40)
    receiver.stop()
    down = outbox.deliver(receiver.url, max_attempts=10, attempts_per_call=2, sleep=no_sleep, concurrency=2)
    assert down.delivered == 0 and down.dead_lettered == 0
    assert down.pending == 40
    assert down.attempted <= 2  # the outage is noticed: the rest are left for later, not hammered
    receiver.start()
    up = outbox.deliver(receiver.url, max_attempts=10, attempts_per_call=2, sleep=no_sleep)
    assert (up.delivered, up.pending) == (40, 0)
    assert receiver.keys() == {f"k{i}": 1 for i in range(40)}
    assert not outbox.dead_letter_path.exists()


def test_transient_errors_are_retried_within_the_call(tmp_path: Path, receiver: Receiver) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    _fill(outbox, 1)
    receiver.fail_next(2, 503)
    slept: list[float] = []
    report = outbox.deliver(receiver.url, max_attempts=5, sleep=slept.append, concurrency=1)
    assert (report.delivered, report.retries) == (1, 2)
    assert len(slept) == 2
    assert receiver.keys() == {"k0": 1}


def test_record_goes_to_dead_letter_after_max_attempts_and_can_be_requeued(
    tmp_path: Path, receiver: Receiver
) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    _fill(outbox, 1)
    receiver.fail_next(3, 500)
    report = outbox.deliver(receiver.url, max_attempts=3, sleep=no_sleep)
    assert (report.delivered, report.dead_lettered) == (0, 1)
    assert outbox.status("k0") == "dead"
    dead = [json.loads(line) for line in outbox.dead_letter_path.read_text().splitlines()]
    assert [(d["key"], d["attempts"], d["payload"]) for d in dead] == [("k0", 3, {"i": 0})]
    assert outbox.deliver(receiver.url, sleep=no_sleep).attempted == 0  # dead records are not sent again
    assert outbox.requeue_dead() == 1
    assert outbox.deliver(receiver.url, sleep=no_sleep).delivered == 1
    assert receiver.keys() == {"k0": 1}


def test_a_permanent_client_error_is_dead_lettered_without_retries(
    tmp_path: Path, receiver: Receiver
) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    _fill(outbox, 1)
    receiver.fail_next(1, 422)
    report = outbox.deliver(receiver.url, max_attempts=5, sleep=no_sleep)
    assert (report.dead_lettered, report.retries) == (1, 0)


def test_attempts_add_up_across_calls(tmp_path: Path, receiver: Receiver) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    _fill(outbox, 1)
    receiver.fail_next(4, 503)
    first = outbox.deliver(receiver.url, max_attempts=4, attempts_per_call=2, sleep=no_sleep)
    assert (first.dead_lettered, outbox.status("k0")) == (0, "pending")
    second = outbox.deliver(receiver.url, max_attempts=4, attempts_per_call=2, sleep=no_sleep)
    assert (second.dead_lettered, outbox.status("k0")) == (1, "dead")


def test_retry_after_is_honoured_up_to_the_cap(tmp_path: Path, receiver: Receiver) -> None:
    import httpx

    outbox = Outbox(tmp_path / "o.sqlite")
    _fill(outbox, 1)
    calls = iter([httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200)])
    transport = httpx.MockTransport(lambda _request: next(calls))
    slept: list[float] = []
    with httpx.Client(transport=transport) as client:
        report = outbox.deliver("http://x/", client=client, sleep=slept.append, max_delay_s=5.0)
    assert report.delivered == 1
    assert slept == [5.0]


@settings(max_examples=20, deadline=None)
@given(
    base=st.floats(0.01, 2.0),
    cap=st.floats(0.1, 60.0),
    seed=st.integers(0, 2**32 - 1),
    attempts=st.integers(2, 8),
)
def test_backoff_is_full_jitter_under_the_exponential_cap(
    tmp_path_factory: pytest.TempPathFactory, base: float, cap: float, seed: int, attempts: int
) -> None:
    import httpx

    outbox = Outbox(tmp_path_factory.mktemp("o") / "o.sqlite")
    _fill(outbox, 1)
    slept: list[float] = []
    transport = httpx.MockTransport(lambda _request: httpx.Response(503))
    with httpx.Client(transport=transport) as client:
        outbox.deliver(
            "http://x/", client=client, max_attempts=attempts, base_delay_s=base, max_delay_s=cap,
            sleep=slept.append, rng=random.Random(seed),
        )  # fmt: skip
    assert len(slept) == attempts - 1
    for k, delay in enumerate(slept):
        assert 0.0 <= delay <= min(cap, base * 2**k)


def test_payload_that_is_not_json_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    with pytest.raises(DeliveryError, match="'bad'"):
        outbox.enqueue_many([OutboxRecord("ok", {"a": 1}), OutboxRecord("bad", {"a": object()})])
    assert outbox.counts()["pending"] == 0


def test_fingerprints_remember_the_last_record_per_subject(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    outbox.enqueue("a1", {}, subject="c1", fingerprint="x")
    outbox.enqueue("a2", {}, subject="c1", fingerprint="y")
    outbox.enqueue("a2", {}, subject="c1", fingerprint="z")  # a known key changes nothing
    outbox.enqueue("b1", {}, subject="c2", fingerprint="x")
    assert outbox.fingerprints() == {"c1": "y", "c2": "x"}
    assert outbox.fingerprints(["c2", "c9"]) == {"c2": "x"}


_CRASHING_DELIVERY = textwrap.dedent(
    """
    import os, sys
    from propensity.activation.delivery import Outbox
    outbox = Outbox(sys.argv[1])
    acked = []
    def crash_after_some(key):
        acked.append(key)
        if len(acked) == int(sys.argv[3]):
            os._exit(9)  # like kill -9: no cleanup, no flush beyond what was committed
    outbox.deliver(sys.argv[2], concurrency=1, on_acknowledged=crash_after_some)
    """
)


def test_crash_mid_delivery_resumes_without_duplicates_or_losses(tmp_path: Path, receiver: Receiver) -> None:
    path = tmp_path / "o.sqlite"
    outbox = Outbox(path)
    _fill(outbox, 60)
    proc = subprocess.run(
        [sys.executable, "-c", _CRASHING_DELIVERY, str(path), receiver.url, "25"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 9, proc.stderr
    assert outbox.counts() == {"pending": 35, "delivered": 25, "dead": 0}
    resumed = outbox.deliver(receiver.url)
    assert resumed.delivered == 35
    assert receiver.keys() == {f"k{i}": 1 for i in range(60)}


def test_a_record_without_attempts_left_is_dead_lettered_without_stopping_the_rest(
    tmp_path: Path, receiver: Receiver
) -> None:
    outbox = Outbox(tmp_path / "o.sqlite")
    _fill(outbox, 1)
    receiver.fail_next(3, 503)
    outbox.deliver(receiver.url, max_attempts=10, attempts_per_call=3, sleep=no_sleep)
    _fill(outbox, 3)  # k0 known already; k1, k2 new
    report = outbox.deliver(receiver.url, max_attempts=2, sleep=no_sleep, concurrency=1)
    assert (report.dead_lettered, report.delivered) == (1, 2)
    assert outbox.status("k0") == "dead"
