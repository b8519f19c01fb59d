"""Reliable delivery over HTTP: a durable outbox with idempotency keys, backoff with jitter, and a dead letter.

A record is written to the outbox (a SQLite file) *before* anything is sent, under an idempotency key that the
caller chooses (``"<destination>:<run>:<customer>"``, ``"alert:<rule>:<window>"``). :meth:`Outbox.deliver` then
POSTs every pending record as JSON with an ``Idempotency-Key`` header and marks it delivered, in its own committed
transaction, as soon as the receiver acknowledges it (any 2xx). So:

* enqueueing a key twice stores it once; a delivered key is never sent again by this outbox;
* after a crash (even ``kill -9``) the next ``deliver`` resumes with the records not yet acknowledged; at most the
  records in flight at the moment of the crash are sent a second time, with the same key, so a receiver that
  honours ``Idempotency-Key`` applies each record exactly once;
* a transient failure (connection error, timeout, 408, 429, 5xx) is retried with exponential backoff and full
  jitter (``sleep = uniform(0, min(max_delay, base * 2**attempt))``, AWS Architecture Blog, "Exponential Backoff
  and Jitter"); a ``Retry-After`` header of a 429/503 is honoured up to ``max_delay``;
* after ``max_attempts`` failed attempts in total (counted across calls), or at once on a permanent failure
  (any other 4xx), the record moves to the dead-letter file (JSON lines) and is not sent again until
  :meth:`Outbox.requeue_dead` puts it back.

Each record may name a *subject* (a customer, an alert rule) and a *fingerprint* of its content; the outbox keeps
the last fingerprint enqueued per subject in the same transaction as the record, so a caller can send "only what
changed" without a second store (:meth:`Outbox.fingerprints`).

Example::

    outbox = Outbox(workspace.state_dir / "activation" / "crm.outbox.sqlite")
    outbox.enqueue("crm:run-42:c1", {"customer_id": "c1", "next_best_action": "buy_7d"})
    report = outbox.deliver("https://crm.example.com/hooks/propensity", max_attempts=8)
    print(report.delivered, report.pending, report.dead_lettered)
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from itertools import islice
from pathlib import Path
from typing import Any

import httpx

from propensity.core.errors import PropensityError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    key          TEXT PRIMARY KEY,
    seq          INTEGER NOT NULL,
    payload      TEXT NOT NULL,
    subject      TEXT,
    status       TEXT NOT NULL DEFAULT 'pending',   -- pending | delivered | dead
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    enqueued_at  REAL NOT NULL,
    delivered_at REAL
);
CREATE INDEX IF NOT EXISTS records_status ON records (status, seq);
CREATE TABLE IF NOT EXISTS subjects (
    subject     TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    key         TEXT NOT NULL
);
"""

# Retrying these can succeed; any other 4xx means the record itself is wrong and would fail forever.
_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class DeliveryError(PropensityError):
    """The outbox cannot be used as asked (e.g. a payload that is not JSON)."""


@dataclass(frozen=True)
class OutboxRecord:
    key: str
    payload: Any
    subject: str | None = None
    fingerprint: str | None = None


@dataclass
class DeliveryReport:
    """What one :meth:`Outbox.deliver` call did. ``pending`` is what is left for the next call."""

    attempted: int = 0
    delivered: int = 0
    retries: int = 0
    failed: int = 0
    dead_lettered: int = 0
    pending: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "attempted": self.attempted,
            "delivered": self.delivered,
            "retries": self.retries,
            "failed": self.failed,
            "dead_lettered": self.dead_lettered,
            "pending": self.pending,
            "seconds": round(self.seconds, 4),
            "errors": self.errors[:10],
        }


@dataclass(frozen=True)
class _Outcome:
    key: str
    ok: bool
    attempts: int
    permanent: bool
    error: str | None


class Outbox:
    """A durable queue of JSON records keyed by idempotency key, delivered by :meth:`deliver`."""

    def __init__(self, path: str | Path, *, dead_letter_path: str | Path | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dead_letter_path = (
            Path(dead_letter_path)
            if dead_letter_path is not None
            else self.path.with_name(self.path.stem + ".dead.jsonl")
        )
        with self._connect() as con:
            con.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute(
                "PRAGMA synchronous=FULL"
            )  # an acknowledged record stays acknowledged after power loss
            yield con
        finally:
            con.close()

    # -- enqueue --------------------------------------------------------------------------------------------
    def enqueue(
        self, key: str, payload: Any, *, subject: str | None = None, fingerprint: str | None = None
    ) -> bool:
        """Store one record unless its key is already known; True when it was new."""
        return self.enqueue_many([OutboxRecord(key, payload, subject, fingerprint)]) == 1

    def enqueue_many(self, records: Iterable[OutboxRecord]) -> int:
        """Store records in one transaction (all or none); keys already known are skipped. Returns new ones."""
        now = time.time()
        added = 0
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                row = con.execute("SELECT coalesce(max(seq), 0) FROM records").fetchone()
                seq = int(row[0]) if row else 0
                for rec in records:
                    try:
                        text = json.dumps(rec.payload, separators=(",", ":"), allow_nan=False)
                    except (TypeError, ValueError) as exc:
                        raise DeliveryError(
                            f"outbox record {rec.key!r}: payload is not JSON ({exc})"
                        ) from None
                    seq += 1
                    cur = con.execute(
                        "INSERT OR IGNORE INTO records (key, seq, payload, subject, enqueued_at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (rec.key, seq, text, rec.subject, now),
                    )
                    if cur.rowcount == 1:
                        added += 1
                        if rec.subject is not None and rec.fingerprint is not None:
                            con.execute(
                                "INSERT INTO subjects VALUES (?, ?, ?) ON CONFLICT (subject) DO UPDATE "
                                "SET fingerprint = excluded.fingerprint, key = excluded.key",
                                (rec.subject, rec.fingerprint, rec.key),
                            )
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return added

    def fingerprints(self, subjects: Iterable[str] | None = None) -> dict[str, str]:
        """The last fingerprint enqueued per subject (all subjects when ``subjects`` is None)."""
        with self._connect() as con:
            if subjects is None:
                rows = con.execute("SELECT subject, fingerprint FROM subjects").fetchall()
            else:
                wanted = list(subjects)
                rows = []
                for i in range(0, len(wanted), 500):
                    chunk = wanted[i : i + 500]
                    marks = ",".join("?" * len(chunk))
                    rows += con.execute(
                        f"SELECT subject, fingerprint FROM subjects WHERE subject IN ({marks})", chunk
                    ).fetchall()
        return {str(s): str(f) for s, f in rows}

    # -- inspect --------------------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Records per status: ``{"pending": n, "delivered": n, "dead": n}``."""
        out = {"pending": 0, "delivered": 0, "dead": 0}
        with self._connect() as con:
            for status, n in con.execute("SELECT status, count(*) FROM records GROUP BY 1").fetchall():
                out[str(status)] = int(n)
        return out

    def status(self, key: str) -> str | None:
        """``pending``, ``delivered``, ``dead``, or None for an unknown key."""
        with self._connect() as con:
            row = con.execute("SELECT status FROM records WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def requeue_dead(self) -> int:
        """Put dead-lettered records back to pending with a fresh attempt count; returns how many."""
        with self._connect() as con:
            cur = con.execute(
                "UPDATE records SET status = 'pending', attempts = 0, last_error = NULL WHERE status = 'dead'"
            )
            return int(cur.rowcount)

    # -- deliver --------------------------------------------------------------------------------------------
    def deliver(
        self,
        url: str,
        *,
        max_attempts: int = 5,
        attempts_per_call: int | None = None,
        base_delay_s: float = 0.5,
        max_delay_s: float = 30.0,
        timeout_s: float = 10.0,
        concurrency: int = 4,
        headers: Mapping[str, str] | None = None,
        limit: int | None = None,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        on_acknowledged: Callable[[str], None] | None = None,
    ) -> DeliveryReport:
        """POST every pending record (oldest first, at most ``limit``) to ``url``; see the module docstring.

        ``max_attempts`` bounds the attempts of a record over its whole life, this call's and earlier ones;
        ``attempts_per_call`` (default: all that are left) bounds them within this call, so that a receiver
        that is down for a while gets the record on a later call rather than sending it to the dead letter;
        ``concurrency`` records are in flight at once. When a record fails all the attempts it had left on a
        transient error the receiver is taken to be down: records not yet started stay pending, untouched,
        for the next call (so an outage dead-letters a handful of records, not the whole queue). ``on_acknowledged(key)`` runs after a record's delivery
        is committed (tests use it to crash at a precise point).
        """
        if max_attempts < 1:
            raise DeliveryError(f"max_attempts must be at least 1, got {max_attempts}")
        started = time.perf_counter()
        report = DeliveryReport()
        rng = rng or random.Random()
        rng_lock = threading.Lock()
        with self._connect() as con:
            sql = "SELECT key, payload, attempts FROM records WHERE status = 'pending' ORDER BY seq"
            rows = con.execute(sql + (f" LIMIT {int(limit)}" if limit else "")).fetchall()
        own_client = client is None
        http = client or httpx.Client(timeout=timeout_s)
        send_headers = {"Content-Type": "application/json", **(headers or {})}

        def backoff(attempt: int, retry_after: float | None) -> float:
            with rng_lock:
                delay = rng.uniform(0.0, min(max_delay_s, base_delay_s * (2**attempt)))
            if retry_after is not None:
                delay = max(delay, min(retry_after, max_delay_s))
            return delay

        outage = threading.Event()

        def send(key: str, payload: str, attempts: int) -> _Outcome | None:
            if outage.is_set():
                return None  # the receiver looks down: leave the rest pending for the next call
            if attempts >= max_attempts:  # max_attempts was lowered since this record's last call
                return _Outcome(key, False, attempts, True, "no attempts left (max_attempts)")
            error: str | None = None
            stop_at = min(max_attempts, attempts + (attempts_per_call or max_attempts))
            while attempts < stop_at:
                attempts += 1
                retry_after: float | None = None
                try:
                    resp = http.post(url, content=payload, headers={**send_headers, "Idempotency-Key": key})
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                else:
                    if 200 <= resp.status_code < 300:
                        return _Outcome(key, True, attempts, False, None)
                    error = f"HTTP {resp.status_code}"
                    if resp.status_code not in _TRANSIENT_STATUS:
                        return _Outcome(key, False, attempts, True, error)
                    retry_after = _retry_after(resp.headers.get("Retry-After"))
                if attempts < stop_at:
                    sleep(backoff(attempts - 1, retry_after))
            outage.set()
            return _Outcome(key, False, attempts, False, error)

        payloads = {str(k): str(p) for k, p, _ in rows}
        try:
            with self._connect() as con, ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
                # A bounded window: a record is sent only once a slot's previous acknowledgement is committed,
                # so a crash can re-send at most ``concurrency`` records.
                todo = iter(rows)
                window: set[Future[_Outcome | None]] = set()
                for k, p, a in islice(todo, max(1, concurrency)):
                    window.add(pool.submit(send, str(k), str(p), int(a)))
                while window:
                    done, window = wait(window, return_when=FIRST_COMPLETED)
                    for future in done:
                        outcome = future.result()
                        if outcome is not None:
                            self._record(con, outcome, payloads, report, max_attempts, on_acknowledged)
                        nxt = next(todo, None)
                        if nxt is not None:
                            window.add(pool.submit(send, str(nxt[0]), str(nxt[1]), int(nxt[2])))
        finally:
            if own_client:
                http.close()
        report.pending = self.counts()["pending"]
        report.seconds = time.perf_counter() - started
        return report

    def _record(
        self,
        con: sqlite3.Connection,
        outcome: _Outcome,
        payloads: dict[str, str],
        report: DeliveryReport,
        max_attempts: int,
        on_acknowledged: Callable[[str], None] | None,
    ) -> None:
        report.attempted += 1
        report.retries += max(0, outcome.attempts - 1)
        if outcome.ok:
            con.execute(
                "UPDATE records SET status = 'delivered', attempts = ?, delivered_at = ?, "
                "last_error = NULL WHERE key = ?",
                (outcome.attempts, time.time(), outcome.key),
            )
            report.delivered += 1
            if on_acknowledged is not None:
                on_acknowledged(outcome.key)
            return
        report.failed += 1
        if outcome.error and len(report.errors) < 10:
            report.errors.append(f"{outcome.key}: {outcome.error}")
        if outcome.permanent or outcome.attempts >= max_attempts:
            self._dead_letter(outcome, payloads[outcome.key])
            con.execute(
                "UPDATE records SET status = 'dead', attempts = ?, last_error = ? WHERE key = ?",
                (outcome.attempts, outcome.error, outcome.key),
            )
            report.dead_lettered += 1
        else:
            con.execute(
                "UPDATE records SET attempts = ?, last_error = ? WHERE key = ?",
                (outcome.attempts, outcome.error, outcome.key),
            )

    def _dead_letter(self, outcome: _Outcome, payload: str) -> None:
        # Written before the status flips to 'dead': a crash in between leaves the record pending (sent again
        # later) rather than dead and missing from the file.
        entry = {
            "key": outcome.key,
            "attempts": outcome.attempts,
            "error": outcome.error,
            "dead_at": datetime.now(UTC).isoformat(),
            "payload": json.loads(payload),
        }
        with self.dead_letter_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, separators=(",", ":")) + "\n")
            fh.flush()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None
