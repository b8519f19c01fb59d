"""API keys with scopes: ``predict`` (scores), ``ingest`` (events), ``admin`` (models: list, promote, rollback),
and for the web console ``console`` (sign in, read-only), ``customers`` (look one customer up) and
``identifiers`` (see customer ids and identifying attributes unmasked); ``admin`` is the console's admin role.

Keys come from a JSON file (``propensity serve --api-keys keys.json``) or the ``PROPENSITY_API_KEYS`` variable:

* file: ``[{"name": "web", "scopes": ["predict"], "sha256": "<hex of the key>"}, ...]`` (``"key"`` in place of
  ``"sha256"`` is accepted, for tests and local use; storing only the hash is better);
* variable: ``name:scope+scope:key`` entries separated by ``,`` (e.g. ``web:predict:s3cret,ops:admin+ingest:k2``).

Only SHA-256 digests are kept in memory; a presented key is hashed and compared with every digest using
:func:`hmac.compare_digest` (constant time, and every entry is compared, so timing says nothing about which
matched). Keys are never logged or echoed; a caller is identified by the key's name.

>>> ring = KeyRing.parse_env("web:predict:k1,ops:admin+ingest:k2")
>>> ring.check("k1", "predict")
'web'
>>> try:
...     ring.check("k1", "admin")
... except ForbiddenError as exc:
...     print(exc)
the key 'web' lacks the admin scope (it has: predict)
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from propensity.core.errors import PropensityError

SCOPES = ("predict", "ingest", "admin", "console", "customers", "identifiers")


class KeyConfigError(PropensityError):
    """The API key configuration is malformed (the message names the entry and the fix)."""


class UnauthorizedError(PropensityError):
    """No key, or a key that matches none configured (HTTP 401)."""


class ForbiddenError(PropensityError):
    """A valid key without the scope the endpoint needs (HTTP 403)."""


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: bytes
    scopes: frozenset[str]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def _scopes(raw: Iterable[str], where: str) -> frozenset[str]:
    scopes = frozenset(s.strip() for s in raw if s.strip())
    unknown = sorted(scopes - set(SCOPES))
    if unknown or not scopes:
        raise KeyConfigError(
            f"{where}: scopes must be some of {', '.join(SCOPES)}; got {sorted(scopes) or 'none'}"
        )
    return scopes


class KeyRing:
    """The configured keys. An empty ring means authentication is off (every request is allowed)."""

    def __init__(self, keys: Iterable[ApiKey] = ()) -> None:
        self.keys = tuple(keys)
        names = [k.name for k in self.keys]
        if len(set(names)) != len(names):
            raise KeyConfigError("API key names must be unique")

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    @classmethod
    def parse_env(cls, value: str) -> KeyRing:
        keys = []
        for i, entry in enumerate(e for e in value.split(",") if e.strip()):
            parts = entry.strip().split(":", 2)
            if len(parts) != 3 or not parts[0] or not parts[2]:
                raise KeyConfigError(
                    f"PROPENSITY_API_KEYS entry {i + 1} is not name:scope+scope:key (e.g. web:predict:s3cret)"
                )
            name, scopes, key = parts
            keys.append(
                ApiKey(name, _digest(key), _scopes(scopes.split("+"), f"PROPENSITY_API_KEYS entry {name!r}"))
            )
        return cls(keys)

    @classmethod
    def load_file(cls, path: Path) -> KeyRing:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise KeyConfigError(f"{path}: cannot read the API keys file ({exc})") from None
        if not isinstance(data, list):
            raise KeyConfigError(f"{path}: expected a JSON list of {{name, scopes, sha256}} objects")
        keys = []
        for i, item in enumerate(data):
            where = f"{path} entry {i + 1}"
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise KeyConfigError(f"{where}: needs a name")
            if isinstance(item.get("sha256"), str):
                try:
                    digest = bytes.fromhex(item["sha256"])
                except ValueError:
                    raise KeyConfigError(f"{where}: sha256 is not hex") from None
                if len(digest) != 32:
                    raise KeyConfigError(f"{where}: sha256 must be 64 hex characters")
            elif isinstance(item.get("key"), str) and item["key"]:
                digest = _digest(item["key"])
            else:
                raise KeyConfigError(f"{where}: needs sha256 (the key's SHA-256, hex) or key")
            scopes = item.get("scopes")
            if not isinstance(scopes, list):
                raise KeyConfigError(f"{where}: scopes must be a list")
            keys.append(ApiKey(item["name"], digest, _scopes(scopes, where)))
        return cls(keys)

    @classmethod
    def configured(cls, path: Path | None = None, env: str | None = None) -> KeyRing:
        """Keys from ``path`` if given, else from ``env`` (the PROPENSITY_API_KEYS value) if set, else none."""
        if path is not None:
            return cls.load_file(path)
        if env:
            return cls.parse_env(env)
        return cls()

    def identify(self, presented: str | None) -> ApiKey:
        """The configured key ``presented`` is (compared with every digest); raises 401 when none."""
        if not presented:
            raise UnauthorizedError("an API key is required")
        digest = _digest(presented)
        found: ApiKey | None = None
        for k in self.keys:
            if hmac.compare_digest(k.digest, digest):
                found = k
        if found is None:
            raise UnauthorizedError("the API key is not valid")
        return found

    def named(self, name: str) -> ApiKey | None:
        """The key called ``name`` (sessions hold the name; a key removed from the ring ends its sessions)."""
        return next((k for k in self.keys if k.name == name), None)

    def check(self, presented: str | None, scope: str) -> str | None:
        """The name of the key allowed ``scope``; raises 401/403 errors. ``None`` when authentication is off."""
        if not self.keys:
            return None
        if not presented:
            raise UnauthorizedError(
                "an API key is required: send it as 'Authorization: Bearer <key>' or X-API-Key"
            )
        digest = _digest(presented)
        found: ApiKey | None = None
        for k in self.keys:  # compare with every key, whichever matches
            if hmac.compare_digest(k.digest, digest):
                found = k
        if found is None:
            raise UnauthorizedError("the API key is not valid")
        if scope not in found.scopes:
            raise ForbiddenError(
                f"the key {found.name!r} lacks the {scope} scope (it has: {', '.join(sorted(found.scopes))})"
            )
        return found.name
