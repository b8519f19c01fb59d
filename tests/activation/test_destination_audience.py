"""Ad audience against a real local audience API: hashes only, consent, changes only, batches, retries."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tests.activation.destinations_fixtures import (
    Receiver,
    canonical_rows,
    flatten,
    workspace_with_attributes,
)

from propensity.activation.destinations.attributes import WorkspaceAttributes
from propensity.activation.destinations.audience import AudienceSync
from propensity.activation.destinations.base import PublishRun
from propensity.activation.destinations.identifiers import (
    hash_email,
    hash_phone,
    normalize_email,
    normalize_phone,
    sha256_hex,
)
from propensity.config.destinations import AudienceDestination
from propensity.workspace import Workspace

HEX64 = re.compile(r"^[0-9a-f]{64}$")
N = 40


def _people(n: int = N, *, refuse: set[str] = frozenset()) -> dict[str, dict[str, str]]:  # type: ignore[assignment]
    return {
        f"c{i}": {
            "email": f" Person.{i}+x@GMail.com ",
            "phone": f"(415) 555-{i:04d}",
            "consent_ads": "false" if f"c{i}" in refuse else "true",
        }
        for i in range(n)
    }


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def _sync(ws: Workspace, receiver: Receiver, **overrides: object) -> AudienceSync:
    spec = AudienceDestination.model_validate(
        {
            "name": "buyers",
            "url": receiver.url,
            "action": "buy_7d",
            "consent_attribute": "consent_ads",
            **overrides,
        }
    )
    sync = AudienceSync(spec, ws.state_dir / "buyers.sqlite", WorkspaceAttributes(ws))
    sync.retry_delay_s = 0.0
    return sync


def _all_sent(receiver: Receiver, field: str) -> list[str]:
    return flatten(b[field] for b in receiver.bodies())


def _hashes_of(people: dict[str, dict[str, str]], ids: list[str]) -> set[str]:
    out = set()
    for cid in ids:
        out.add(hash_email(people[cid]["email"]))
        out.add(hash_phone(people[cid]["phone"]))
    return {h for h in out if h}


def _high_for(ids: set[str], run_id: str = "r1") -> object:
    scores = np.array([0.9 if f"c{i}" in ids else 0.1 for i in range(N)] * 2)
    return canonical_rows(N, run_id=run_id, scores=scores)


def test_only_hashes_leave_and_only_hashes_are_kept(tmp_path: Path, receiver: Receiver) -> None:
    people = _people()
    ws = workspace_with_attributes(tmp_path, people)
    sync = _sync(ws, receiver)
    rows = canonical_rows(N)
    report = sync.publish(PublishRun.from_rows(rows), rows)
    assert report.status == "delivered" and report.accepted > 0
    sent = _all_sent(receiver, "adds")
    assert sent and all(HEX64.match(h) for h in sent)
    state_bytes = sync.state_path.read_bytes()
    for attrs in people.values():
        for raw in (attrs["email"].strip(), attrs["phone"], normalize_email(attrs["email"]) or ""):
            assert raw.encode() not in state_bytes
            assert all(raw not in str(b) for b in receiver.bodies())


def test_the_audience_is_the_selected_segment_with_both_identifiers(
    tmp_path: Path, receiver: Receiver
) -> None:
    people = _people()
    ws = workspace_with_attributes(tmp_path, people)
    chosen = {"c1", "c5", "c7"}
    rows = _high_for(chosen)
    report = _sync(ws, receiver, segments=["high"]).publish(PublishRun.from_rows(rows), rows)  # type: ignore[arg-type]
    assert set(_all_sent(receiver, "adds")) == _hashes_of(people, sorted(chosen))
    assert (report.sent, report.accepted, report.failed) == (6, 6, 0)
    assert report.details["audience_size"] == 3


class DictAttributes:
    """The AttributeLookup protocol over a dict (the property test runs hundreds of syncs; the DuckDB-backed
    lookup is exercised by the other tests)."""

    def __init__(self, people: dict[str, dict[str, str]]) -> None:
        self.people = people

    def lookup(self, customer_ids: object, names: object) -> dict[str, dict[str, str]]:
        return {c: dict(self.people[c]) for c in customer_ids if c in self.people}  # type: ignore[attr-defined]


def _check_consent_is_honoured(sync: AudienceSync, receiver: Receiver, people: dict[str, dict[str, str]],
                               refuse: set[str], withdrawn: set[str], reload: object) -> None:  # fmt: skip
    rows = canonical_rows(N, run_id="r1", scores=np.full(2 * N, 0.5))
    sync.publish(PublishRun.from_rows(rows), rows)
    never = _hashes_of(people, sorted(refuse))
    assert not never & set(_all_sent(receiver, "adds"))
    # Some consenting customers withdraw: even in upsert mode they are removed, and never re-added.
    for cid in withdrawn:
        people[cid]["consent_ads"] = "no"
    reload(people)  # type: ignore[operator]
    rows2 = canonical_rows(N, run_id="r2", scores=np.full(2 * N, 0.5))
    before = len(receiver.bodies())
    sync.publish(PublishRun.from_rows(rows2), rows2)
    later = receiver.bodies()[before:]
    assert set(flatten(b["removes"] for b in later)) == _hashes_of(people, sorted(withdrawn))
    assert not (never | _hashes_of(people, sorted(withdrawn))) & set(flatten(b["adds"] for b in later))
    assert not set(sync.members()) & (refuse | withdrawn)


def test_a_customer_without_consent_never_appears(tmp_path: Path, receiver: Receiver) -> None:
    refuse, withdrawn = {"c0", "c7", "c13"}, {"c2", "c21"}
    people = _people(refuse=refuse)
    ws = workspace_with_attributes(tmp_path, people)
    sync = _sync(ws, receiver, mode="upsert")
    _check_consent_is_honoured(
        sync, receiver, people, refuse, withdrawn, lambda p: workspace_with_attributes(tmp_path, p)
    )


@settings(max_examples=12, deadline=None)
@given(
    refuse=st.sets(st.sampled_from([f"c{i}" for i in range(N)])),
    withdraw=st.sets(st.sampled_from([f"c{i}" for i in range(N)])),
    mode=st.sampled_from(["mirror", "upsert"]),
)
def test_no_consent_never_appears_whatever_the_consents_and_mode(
    tmp_path_factory: pytest.TempPathFactory, refuse: set[str], withdraw: set[str], mode: str
) -> None:
    receiver = Receiver().start()
    try:
        people = _people(refuse=refuse)
        attributes = DictAttributes(people)
        spec = AudienceDestination.model_validate(
            {
                "name": "b",
                "url": receiver.url,
                "action": "buy_7d",
                "consent_attribute": "consent_ads",
                "mode": mode,
            }
        )
        sync = AudienceSync(spec, tmp_path_factory.mktemp("s") / "b.sqlite", attributes)
        _check_consent_is_honoured(sync, receiver, people, refuse, withdraw - refuse, lambda p: None)
    finally:
        receiver.stop()


def test_row_consent_json_saying_no_keeps_the_customer_out(tmp_path: Path, receiver: Receiver) -> None:
    ws = workspace_with_attributes(tmp_path, _people())
    rows = canonical_rows(N, consent={"ads": False, "email": True})
    _sync(ws, receiver).publish(PublishRun.from_rows(rows), rows)
    assert _all_sent(receiver, "adds") == []


def test_only_changes_are_sent_in_mirror_and_upsert_modes(tmp_path: Path, receiver: Receiver) -> None:
    people = _people()
    ws = workspace_with_attributes(tmp_path, people)
    for mode in ("mirror", "upsert"):
        receiver.received.clear()
        sync = _sync(ws, receiver, segments=["high"], mode=mode, name=f"aud_{mode}")
        sync.state_path = tmp_path / f"{mode}.sqlite"
        sync = AudienceSync(sync.spec, tmp_path / f"{mode}.sqlite", WorkspaceAttributes(ws))
        first = _high_for({"c1", "c2", "c3"}, "r1")
        sync.publish(PublishRun.from_rows(first), first)  # type: ignore[arg-type]
        again = sync.publish(PublishRun.from_rows(first), first)  # type: ignore[arg-type]
        assert again.sent == 0  # nothing changed: nothing sent
        second = _high_for({"c2", "c3", "c4"}, "r2")
        receiver.received.clear()
        report = sync.publish(PublishRun.from_rows(second), second)  # type: ignore[arg-type]
        assert set(_all_sent(receiver, "adds")) == _hashes_of(people, ["c4"])
        expected_removes = _hashes_of(people, ["c1"]) if mode == "mirror" else set()
        assert set(_all_sent(receiver, "removes")) == expected_removes
        assert report.details["adds"] == 2 and report.details["removes"] == len(expected_removes)
        members = set(sync.members())
        assert members == ({"c2", "c3", "c4"} if mode == "mirror" else {"c1", "c2", "c3", "c4"})


def test_requests_carry_at_most_batch_size_identifiers(tmp_path: Path, receiver: Receiver) -> None:
    ws = workspace_with_attributes(tmp_path, _people())
    rows = canonical_rows(N, scores=np.full(2 * N, 0.5))
    report = _sync(ws, receiver, batch_size=7).publish(PublishRun.from_rows(rows), rows)
    sizes = [len(b["adds"]) + len(b["removes"]) for b in receiver.bodies()]
    assert max(sizes) == 7 and sum(sizes) == report.sent == 2 * N
    with pytest.raises(ValidationError, match="10000"):
        AudienceDestination.model_validate(
            {"name": "a", "url": "http://x", "action": "a", "batch_size": 10_001}
        )


def test_failed_identifiers_are_retried_on_the_next_sync(tmp_path: Path, receiver: Receiver) -> None:
    people = _people()
    ws = workspace_with_attributes(tmp_path, people)
    sync = _sync(ws, receiver, batch_size=10)
    rows = canonical_rows(N, scores=np.full(2 * N, 0.5))
    rejected = _hashes_of(people, ["c3", "c9"])
    receiver.reject = set(rejected)
    receiver.fail_next(3, 503)  # the first batch fails on all three attempts
    first = sync.publish(PublishRun.from_rows(rows), rows)
    assert first.status == "partial"
    first_batch = set(sorted(_hashes_of(people, list(people)))[:10])  # adds go out in hash order
    assert first.failed == 10 + len(rejected - first_batch)
    assert first.accepted + first.failed == first.sent == 2 * N
    receiver.reject = set()
    receiver.received.clear()
    second = sync.publish(PublishRun.from_rows(rows), rows)
    assert second.status == "delivered"
    assert second.sent == first.failed
    third = sync.publish(PublishRun.from_rows(rows), rows)
    assert third.sent == 0
    assert set(sync.members()) == set(people)


def test_receiver_down_fails_the_sync_and_the_next_one_catches_up(tmp_path: Path, receiver: Receiver) -> None:
    ws = workspace_with_attributes(tmp_path, _people())
    sync = _sync(ws, receiver)
    rows = canonical_rows(N, scores=np.full(2 * N, 0.5))
    receiver.stop()
    down = sync.publish(PublishRun.from_rows(rows), rows)
    assert (down.status, down.accepted, down.failed) == ("failed", 0, 2 * N)
    assert "ConnectError" in down.message
    receiver.start()
    up = sync.publish(PublishRun.from_rows(rows), rows)
    assert (up.status, up.accepted) == ("delivered", 2 * N)


# -- normalisation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("  Jane.Doe@Example.COM ", "jane.doe@example.com"),
        ("jane.doe+news@gmail.com", "janedoe@gmail.com"),
        ("J.A.N.E@googlemail.com", "jane@googlemail.com"),
        ("jane.doe@gmail.co.uk", "jane.doe@gmail.co.uk"),
        ("not-an-email", None),
        ("@gmail.com", None),
        ("", None),
    ],
)
def test_email_normalisation(raw: str, normal: str | None) -> None:
    assert normalize_email(raw) == normal


@pytest.mark.parametrize(
    ("raw", "code", "normal"),
    [
        ("+44 20 7946 0000", "1", "+442079460000"),
        ("0044 20 7946 0000", "1", "+442079460000"),
        ("020 7946 0000", "44", "+442079460000"),
        ("(415) 555-0100", "1", "+14155550100"),
        ("1-415-555-0100", "1", "+14155550100"),
        ("06 12 34 56 78", "33", "+33612345678"),
        ("12", "1", None),
        ("phone", "1", None),
    ],
)
def test_phone_normalisation_to_e164(raw: str, code: str, normal: str | None) -> None:
    assert normalize_phone(raw, default_country_code=code) == normal


def test_hash_is_sha256_hex_of_the_normal_form() -> None:
    # Google's published example of a normalised, hashed email.
    assert sha256_hex("test@gmail.com") == "87924606b4131a8aceeeae8868531fbb9712aaa07a5d3a756b26ce0f5d6ca674"


@settings(max_examples=200)
@given(
    local=st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z0-9]{1,5}){0,2}", fullmatch=True),
    domain=st.sampled_from(["gmail.com", "googlemail.com", "example.org"]),
    spaces=st.text(alphabet=" \t", max_size=3),
    upper=st.booleans(),
)
def test_email_normal_form_is_idempotent_and_ignores_case_and_spaces(
    local: str, domain: str, spaces: str, upper: bool
) -> None:
    raw = f"{spaces}{local}@{domain}{spaces}"
    raw = raw.upper() if upper else raw
    normal = normalize_email(raw)
    assert normal is not None
    assert normalize_email(normal) == normal
    assert hash_email(raw) == hash_email(f"{local}@{domain}")
    if domain != "example.org":
        assert "." not in normal.split("@")[0]
