"""Ad audience: hashed identifiers of the selected, consenting customers, synced as adds and removes.

The audience of a run is the customers whose row for the destination's ``action`` is eligible, in ``segments``
(when given), scored at least ``min_score`` (when given), not in an experiment's control group, and consenting
(``consent_attribute`` true in their attributes, and the row's consent JSON not saying no for
``consent_channel``). Their email and phone attributes are normalised and hashed in memory (identifiers.py);
only hashes leave the process and only hashes are stored.

Each sync compares that set with what the audience API last *accepted* (kept in a SQLite file, hashes only,
keyed by customer) and sends the difference: adds, and in ``mirror`` mode removes of hashes nobody in the audience
has any more (``upsert`` never removes, except for customers who withdrew consent, who are always removed).
Identifiers the API reports failed, or batches that did not get through, are not recorded as synced, so the next
sync sends them again.

The wire protocol (the reference "audience API"; a Google Customer Match or Meta Custom Audiences adapter is a
small translation of the same shape)::

    POST <url>   {"audience": "<name>", "run_id": "...", "adds": ["<sha256 hex>", ...], "removes": [...]}
    200          {"accepted": <int>, "failed": ["<sha256 hex>", ...]}

with at most ``batch_size`` (≤ 10,000) identifiers per request, adds and removes together.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.compute as pc

from propensity.activation.destinations.attributes import AttributeLookup
from propensity.activation.destinations.base import PublishReport, PublishRun, PublishStatus, without_control
from propensity.activation.destinations.identifiers import hash_email, hash_phone
from propensity.config.destinations import AudienceDestination

_TRUE = frozenset({"true", "1", "yes", "y", "t"})
_SCHEMA = """
CREATE TABLE IF NOT EXISTS members (
    customer_id TEXT NOT NULL,
    hash        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    synced_at   REAL NOT NULL,
    PRIMARY KEY (customer_id, hash)
);
CREATE INDEX IF NOT EXISTS members_hash ON members (hash);
CREATE TABLE IF NOT EXISTS syncs (
    run_id   TEXT NOT NULL,
    at       TEXT NOT NULL,
    adds     INTEGER NOT NULL,
    removes  INTEGER NOT NULL,
    sent     INTEGER NOT NULL,
    accepted INTEGER NOT NULL,
    failed   INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class AudienceDiff:
    """What a sync must send: hashes to add and remove, and who holds each hash to add."""

    adds: list[str]
    removes: list[str]
    add_owners: dict[str, list[tuple[str, str]]]  # hash -> [(customer_id, kind)]
    keep: list[
        tuple[str, str, str]
    ]  # (customer_id, hash, kind) already on the far side under another customer


class AudienceSync:
    type = "audience"
    realtime = False

    def __init__(
        self,
        spec: AudienceDestination,
        state_path: Path,
        attributes: AttributeLookup,
        *,
        client: httpx.Client | None = None,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.state_path = state_path
        self.attributes = attributes
        self._client = client
        self.retry_delay_s = 0.2  # first pause between the (three) attempts at one batch; tests set 0
        state_path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.state_path, timeout=60.0, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            yield con
        finally:
            con.close()

    # -- who should be in ---------------------------------------------------------------------------------
    def candidates(self, rows: pa.Table) -> list[str]:
        """Customers the run selects for the audience, before consent and identifiers."""
        spec = self.spec
        rows = without_control(rows)
        mask = pc.and_(
            pc.equal(rows.column("action"), spec.action), pc.fill_null(rows.column("eligible"), False)
        )
        if spec.segments is not None:
            mask = pc.and_(mask, pc.is_in(rows.column("segment"), pa.array(spec.segments, pa.string())))
        if spec.min_score is not None:
            mask = pc.and_(mask, pc.greater_equal(rows.column("score"), spec.min_score))
        chosen = rows.filter(pc.fill_null(mask, False))
        if spec.consent_channel is not None:
            channel = spec.consent_channel
            ids = chosen.column("customer_id").to_pylist()
            consents = chosen.column("consent").to_pylist()
            return [c for c, text in zip(ids, consents, strict=True) if _row_allows(text, channel)]
        return chosen.column("customer_id").to_pylist()

    def desired(
        self, customers: list[str], known: set[str]
    ) -> tuple[dict[str, set[tuple[str, str]]], set[str]]:
        """``({customer: {(hash, kind)}}, withdrawn)``: hashes of consenting candidates; customers in the
        synced state (``known``) whose consent attribute is no longer true."""
        spec = self.spec
        names = [n for n in (spec.identifiers.email, spec.identifiers.phone, spec.consent_attribute) if n]
        values = self.attributes.lookup(set(customers) | known, names)
        withdrawn: set[str] = set()
        if spec.consent_attribute is not None:
            attr = spec.consent_attribute
            withdrawn = {c for c in known if not _is_true(values.get(c, {}).get(attr))}
        out: dict[str, set[tuple[str, str]]] = {}
        for cid in customers:
            attrs = values.get(cid, {})
            if spec.consent_attribute is not None and not _is_true(attrs.get(spec.consent_attribute)):
                continue
            hashes: set[tuple[str, str]] = set()
            if spec.identifiers.email:
                h = hash_email(attrs.get(spec.identifiers.email))
                if h:
                    hashes.add((h, "email"))
            if spec.identifiers.phone:
                h = hash_phone(
                    attrs.get(spec.identifiers.phone), default_country_code=spec.default_country_code
                )
                if h:
                    hashes.add((h, "phone"))
            if hashes:
                out[cid] = hashes
        return out, withdrawn

    def diff(self, desired: dict[str, set[tuple[str, str]]], withdrawn: set[str]) -> AudienceDiff:
        with self._connect() as con:
            state = con.execute("SELECT customer_id, hash FROM members").fetchall()
        synced_hashes = {h for _, h in state}
        synced_pairs = {(c, h) for c, h in state}
        wanted_hashes = {h for hashes in desired.values() for h, _ in hashes}
        add_owners: dict[str, list[tuple[str, str]]] = {}
        keep: list[tuple[str, str, str]] = []
        for cid, hashes in desired.items():
            for h, kind in hashes:
                if h not in synced_hashes:
                    add_owners.setdefault(h, []).append((cid, kind))
                elif (cid, h) not in synced_pairs:
                    keep.append((cid, h, kind))
        if self.spec.mode == "mirror":
            removes = synced_hashes - wanted_hashes
        else:
            removes = {h for c, h in state if c in withdrawn} - wanted_hashes
        return AudienceDiff(sorted(add_owners), sorted(removes), add_owners, keep)

    # -- sync ---------------------------------------------------------------------------------------------
    def publish(self, run: PublishRun, rows: pa.Table) -> PublishReport:
        with self._connect() as con:
            known = {str(c) for (c,) in con.execute("SELECT DISTINCT customer_id FROM members").fetchall()}
        customers = self.candidates(rows)
        desired, withdrawn = self.desired(customers, known)
        if self.spec.consent_channel is not None:
            withdrawn |= row_denied(rows, self.spec.consent_channel) & known
        diff = self.diff(desired, withdrawn)
        sent = accepted = failed = 0
        errors: list[str] = []
        ops = [("add", h) for h in diff.adds] + [("remove", h) for h in diff.removes]
        client = self._client or httpx.Client(timeout=self.spec.timeout_s)
        try:
            for start in range(0, len(ops), self.spec.batch_size):
                batch = ops[start : start + self.spec.batch_size]
                adds = [h for op, h in batch if op == "add"]
                removes = [h for op, h in batch if op == "remove"]
                sent += len(batch)
                ok, rejected, error = self._send(client, run, adds, removes)
                if error:
                    errors.append(error)
                done_adds = [h for h in adds if ok and h not in rejected]
                done_removes = [h for h in removes if ok and h not in rejected]
                accepted += len(done_adds) + len(done_removes)
                failed += len(batch) - len(done_adds) - len(done_removes)
                self._record(diff, done_adds, done_removes)
        finally:
            if self._client is None:
                client.close()
        self._record_keep(diff, desired, withdrawn)
        with self._connect() as con:
            con.execute(
                "INSERT INTO syncs VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run.run_id, datetime.now(UTC).isoformat(), len(diff.adds), len(diff.removes), sent, accepted,
                 failed),
            )  # fmt: skip
        status: PublishStatus = "delivered" if failed == 0 else ("partial" if accepted else "failed")
        message = "" if not errors else f"{len(errors)} batch error(s), first: {errors[0]}"
        return PublishReport(
            self.name, self.type, status, rows=rows.num_rows, sent=sent, accepted=accepted, failed=failed,
            message=message,
            details={
                "audience_size": len(desired), "adds": len(diff.adds), "removes": len(diff.removes),
                "withdrawn_consent": len(withdrawn), "mode": self.spec.mode,
            },
        )  # fmt: skip

    def _send(
        self, client: httpx.Client, run: PublishRun, adds: list[str], removes: list[str]
    ) -> tuple[bool, set[str], str | None]:
        body = {"audience": self.spec.name, "run_id": run.run_id, "adds": adds, "removes": removes}
        headers = {"Content-Type": "application/json"}
        if self.spec.token_env:
            headers["Authorization"] = f"Bearer {os.environ.get(self.spec.token_env, '')}"
        delay = self.retry_delay_s
        error: str | None = None
        for attempt in range(3):
            try:
                resp = client.post(self.spec.url, content=json.dumps(body), headers=headers)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}"
            else:
                if resp.status_code == 200:
                    answer = resp.json()
                    return True, {str(h) for h in answer.get("failed", [])}, None
                error = f"HTTP {resp.status_code}"
                if resp.status_code < 500 and resp.status_code not in (408, 429):
                    break
            if attempt < 2:
                time.sleep(delay)
                delay *= 4
        return False, set(), error

    def _record(self, diff: AudienceDiff, added: list[str], removed: list[str]) -> None:
        now = time.time()
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            for h in added:
                for cid, kind in diff.add_owners[h]:
                    con.execute("INSERT OR REPLACE INTO members VALUES (?, ?, ?, ?)", (cid, h, kind, now))
            for h in removed:
                con.execute("DELETE FROM members WHERE hash = ?", (h,))
            con.execute("COMMIT")

    def _record_keep(
        self, diff: AudienceDiff, desired: dict[str, set[tuple[str, str]]], withdrawn: set[str]
    ) -> None:
        """Record hashes already on the far side under another customer; in mirror mode forget the pairs of
        customers who left while their hash stays (someone else still has it)."""
        now = time.time()
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            for cid, h, kind in diff.keep:
                con.execute("INSERT OR REPLACE INTO members VALUES (?, ?, ?, ?)", (cid, h, kind, now))
            wanted_hashes = {h for hashes in desired.values() for h, _ in hashes}
            for cid, h in con.execute("SELECT customer_id, hash FROM members").fetchall():
                # A hash someone still has stays on the far side; only this customer's claim to it goes.
                # (Hashes nobody wants are deleted when their remove is accepted, and kept until then.)
                leaving = self.spec.mode == "mirror" or cid in withdrawn
                if leaving and h in wanted_hashes and h not in {x for x, _ in desired.get(cid, set())}:
                    con.execute("DELETE FROM members WHERE customer_id = ? AND hash = ?", (cid, h))
            con.execute("COMMIT")

    def members(self) -> dict[str, set[str]]:
        """The synced state: ``{customer_id: {hash}}`` (what the audience API has accepted)."""
        out: dict[str, set[str]] = {}
        with self._connect() as con:
            for cid, h in con.execute("SELECT customer_id, hash FROM members").fetchall():
                out.setdefault(str(cid), set()).add(str(h))
        return out


def _row_allows(consent_json: str | None, channel: str) -> bool:
    """The row's consent JSON allows the channel unless it says false for it (null/unknown defers to the
    consent attribute)."""
    if not consent_json:
        return True
    try:
        consent = json.loads(consent_json)
    except ValueError:
        return False  # unreadable consent is no consent
    return not (isinstance(consent, dict) and consent.get(channel) is False)


def _is_true(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUE


def row_denied(rows: pa.Table, channel: str) -> set[str]:
    """Customers whose row consent JSON says no for ``channel``."""
    ids = rows.column("customer_id").to_pylist()
    consents = rows.column("consent").to_pylist()
    return {c for c, text in zip(ids, consents, strict=True) if not _row_allows(text, channel)}
