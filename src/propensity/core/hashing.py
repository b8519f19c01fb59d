"""Deterministic assignment by hash: the same customer lands in the same group on every machine, forever.

Used for holdout (control) groups and canary routing. The fraction is taken from SHA-256 of ``salt:customer_id``
(not Python's ``hash``, which is salted per process), so assignments survive restarts and agree across replicas
and languages: the first 8 bytes of the digest, big-endian, divided by 2**64.

>>> stable_fraction("c1", "exp-2026-q4") == stable_fraction("c1", "exp-2026-q4")
True
>>> 0.0 <= stable_fraction("c1", "canary") < 1.0
True
"""

from __future__ import annotations

import hashlib

_SCALE = float(1 << 64)


def stable_fraction(customer_id: str, salt: str) -> float:
    """A number in [0, 1) fixed by ``(salt, customer_id)`` and uniformly spread across customers."""
    digest = hashlib.sha256(f"{salt}:{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def in_share(customer_id: str, salt: str, share: float) -> bool:
    """Whether the customer falls in the first ``share`` (0–1) of the salt's hash space."""
    return stable_fraction(customer_id, salt) < share
