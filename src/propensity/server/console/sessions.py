"""Console sign-in: an API key with a console scope, exchanged once for a session cookie.

The sign-in page posts a key; a valid key with the ``console`` or ``admin`` scope gets a session: a random
256-bit token in a cookie that is ``Secure``, ``HttpOnly`` and ``SameSite=Strict`` and scoped to ``/console``.
Only the token's SHA-256 is stored (SQLite, ``.propensity/console/sessions.sqlite``, so every worker process and
a restarted server know it), with the key's name, a fingerprint of the key and the session's CSRF token. Each
request looks the session up and takes its scopes from the key ring *now*: a key removed from the ring, or
given a new secret, ends its sessions at once. Sessions last :data:`SESSION_HOURS` hours; signing out deletes
the session. State-changing requests must also send the CSRF token (``X-CSRF-Token``), which the pages carry.

Roles: ``console`` alone is read-only; ``admin`` adds promote, roll back and saving targets; ``customers``
opens the customer lookup; ``identifiers`` shows customer ids and identifying attributes unmasked.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from propensity.serving.auth import ApiKey, KeyRing

COOKIE = "propensity_console"
SESSION_HOURS = 8.0
SIGN_IN_SCOPES = frozenset({"console", "admin"})
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    token_sha256 TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    key_print    TEXT NOT NULL,
    csrf         TEXT NOT NULL,
    created      REAL NOT NULL,
    expires      REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Session:
    """A signed-in user: the key's name, its scopes now, the CSRF token of the session."""

    name: str
    scopes: frozenset[str]
    csrf: str
    expires: float
    local: bool = False  # authentication is off: a local user with every scope

    @property
    def role(self) -> str:
        return "admin" if "admin" in self.scopes else "read-only"

    def may(self, scope: str) -> bool:
        if scope == "console":
            return bool(self.scopes & SIGN_IN_SCOPES)
        return scope in self.scopes


LOCAL = Session(
    "local", frozenset({"console", "admin", "customers", "identifiers"}), "", float("inf"), local=True
)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _print(key: ApiKey) -> str:
    return hashlib.sha256(b"console-session:" + key.digest).hexdigest()[:32]


class Sessions:
    """The session table of one workspace (see the module docstring)."""

    def __init__(self, path: Path, keys: KeyRing) -> None:
        self.path = path
        self.keys = keys
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.executescript(_SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        con = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            con.execute("PRAGMA journal_mode=WAL")
            yield con
        finally:
            con.close()

    def open(self, key: ApiKey, *, hours: float = SESSION_HOURS) -> tuple[str, Session]:
        """A new session for ``key`` (already verified): the cookie's token and the session."""
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        now = time.time()
        expires = now + hours * 3600.0
        with self._connect() as con:
            con.execute("DELETE FROM sessions WHERE expires < ?", (now,))
            con.execute(
                "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
                (_sha(token), key.name, _print(key), csrf, now, expires),
            )
        return token, Session(key.name, key.scopes, csrf, expires)

    def get(self, token: str | None) -> Session | None:
        """The live session of ``token``, or None (unknown, expired, or its key gone or changed)."""
        if not token:
            return None
        with self._connect() as con:
            row = con.execute(
                "SELECT name, key_print, csrf, expires FROM sessions WHERE token_sha256 = ?", (_sha(token),)
            ).fetchone()
        if row is None:
            return None
        name, key_print, csrf, expires = row
        key = self.keys.named(str(name))
        if expires < time.time() or key is None or not hmac.compare_digest(_print(key), str(key_print)):
            return None
        return Session(key.name, key.scopes, str(csrf), float(expires))

    def close(self, token: str | None) -> None:
        if token:
            with self._connect() as con:
                con.execute("DELETE FROM sessions WHERE token_sha256 = ?", (_sha(token),))
