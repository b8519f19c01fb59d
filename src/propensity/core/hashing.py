"""The one sampling hash: the same customer lands in the same group or sample on every machine, forever.

Used for holdout (control) groups, canary routing, uplift folds and every sample of customers (training rows,
monitoring, the leakage audit, feature statistics). The fraction is taken from SHA-256 of ``salt:customer_id``
(not Python's ``hash``, which is salted per process, nor an engine's own hash), so assignments survive restarts
and agree across replicas, engines and languages: the first 8 bytes of the digest, big-endian, divided by 2**64.
In SQL the same order is :func:`sample_key_sql` (the digest's first 16 hex digits sort as those 8 bytes do).

>>> stable_fraction("c1", "exp-2026-q4") == stable_fraction("c1", "exp-2026-q4")
True
>>> 0.0 <= stable_fraction("c1", "canary") < 1.0
True
>>> content_hash({"b": 1, "a": [1, 2]})
'94a786c3662bc7be'
"""

from __future__ import annotations

import hashlib
import json

_SCALE = float(1 << 64)


def stable_fraction(customer_id: str, salt: str) -> float:
    """A number in [0, 1) fixed by ``(salt, customer_id)`` and uniformly spread across customers."""
    digest = hashlib.sha256(f"{salt}:{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def in_share(customer_id: str, salt: str, share: float) -> bool:
    """Whether the customer falls in the first ``share`` (0–1) of the salt's hash space."""
    return stable_fraction(customer_id, salt) < share


def sample_key_sql(column: str, salt: str) -> str:
    """A SQL (DuckDB) expression that orders rows as :func:`stable_fraction` orders their customers: ``ORDER BY``
    it and take the first ``n`` for a reproducible sample of ``n`` customers. ``salt`` must be a plain label
    (letters, digits, ``_-:.|``); it is written into the SQL as a literal."""
    if not all(ch.isalnum() or ch in "_-:.|" for ch in salt):
        raise ValueError(f"sample salt {salt!r}: use letters, digits and _-:.| only")
    return f"left(sha256('{salt}:' || {column}), 16)"


def in_share_sql(column: str, salt: str, share: float) -> str:
    """A SQL (DuckDB) condition true for the customers :func:`in_share` puts in the first ``share`` (0–1)."""
    if share >= 1.0:
        return "TRUE"
    threshold = max(0, int(share * _SCALE))
    return f"{sample_key_sql(column, salt)} < '{threshold:016x}'"


def content_hash(payload: object, length: int = 16, *, spaced: bool = False) -> str:
    """The content hash of a JSON-able value: SHA-256 of its canonical JSON (keys sorted, no spaces, values JSON
    cannot hold written with ``str``, NaN refused), as lowercase hex cut to ``length`` digits. Every id derived
    from content (bundle ids, feature set versions, training sets, cache keys) is this, so the same content
    always gets the same id. ``spaced=True`` hashes ``json.dumps``'s default spacing instead: only for keys
    already persisted in that form (the decision fingerprints that webhook and real-time outboxes compare)."""
    separators = (", ", ": ") if spaced else (",", ":")
    text = json.dumps(payload, sort_keys=True, separators=separators, default=str, allow_nan=False)
    return digest(text.encode("utf-8"))[:length]


def digest(data: bytes) -> str:
    """SHA-256 of raw bytes as lowercase hex (file checksums)."""
    return hashlib.sha256(data).hexdigest()
