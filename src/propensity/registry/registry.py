"""The registry: which bundle is production, which are candidates or archived, and the history of moves.

State lives in ``.propensity/models/registry.json`` (written atomically under the workspace lock); bundles never
change. A new bundle is a *candidate*. ``promote`` makes a candidate *production* (the previous production is
*archived*) if it passes the gate (:mod:`propensity.registry.gate`) or is forced with a recorded reason.
``rollback`` moves the production pointer back to the bundle that was production before.

Every move verifies the bundle it moves to (its checksums, :func:`~propensity.registry.bundle.verify_bundle`)
*before* the pointer moves, under the lock: a corrupted bundle is refused and production stays where it was. A
corrupted *production* bundle does not block recovery: ``promote --force --reason`` replaces it with a healthy
candidate or archived bundle (recorded), since the gate cannot compare with a bundle it cannot load.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from propensity.core.errors import PropensityError
from propensity.core.manifest import BundleManifest
from propensity.registry.bundle import (
    Bundle,
    BundleNotFoundError,
    CorruptBundleError,
    load_bundle,
    read_manifest,
    verify_bundle,
)
from propensity.workspace import Workspace

REGISTRY_FILE = "registry.json"
STAGES = ("candidate", "production", "archived")


class RegistryError(PropensityError):
    """A registry move that cannot be made (nothing to roll back to, not a candidate, ...)."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class BundleEntry:
    id: str
    stage: str
    created_at: str
    manifest: BundleManifest | None  # None when the bundle's manifest cannot be read


class Registry:
    """The bundles of one workspace. Every method that changes state takes the workspace lock."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.dir = workspace.state_dir / "models"

    # -------------------------------------------------------------------------------------------- state
    def _read(self) -> dict[str, Any]:
        path = self.dir / REGISTRY_FILE
        if not path.exists():
            return {"bundles": {}, "production": None, "history": []}
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data

    def _write(self, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{REGISTRY_FILE}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.dir / REGISTRY_FILE)

    def resolve(self, ref: str) -> str:
        """A bundle id from an id, a unique prefix, ``production`` or ``latest`` (the newest bundle)."""
        state = self._read()
        if ref == "production":
            if state["production"] is None:
                raise RegistryError(
                    "no bundle is in production yet; promote one with `propensity models promote`"
                )
            return str(state["production"])
        if ref == "latest":
            if not state["bundles"]:
                raise BundleNotFoundError("there is no bundle yet; train one with `propensity train`")
            return str(max(state["bundles"], key=lambda i: (state["bundles"][i].get("created_at", ""), i)))
        ids = [i for i in state["bundles"] if i.startswith(ref)]
        if len(ids) != 1:
            known = ", ".join(sorted(state["bundles"])) or "(none)"
            what = "matches several bundles" if ids else "matches no bundle"
            raise BundleNotFoundError(f"{ref!r} {what}; known: {known}")
        return ids[0]

    def path(self, bundle_id: str) -> Path:
        return self.dir / bundle_id

    def load(self, ref: str) -> Bundle:
        return load_bundle(self.path(self.resolve(ref)))

    # ------------------------------------------------------------------------------------------- queries
    def entries(self) -> list[BundleEntry]:
        state = self._read()
        out = []
        for bid, entry in state["bundles"].items():
            manifest: BundleManifest | None
            try:
                manifest = read_manifest(self.path(bid))
            except PropensityError:
                manifest = None
            out.append(BundleEntry(bid, entry["stage"], entry["created_at"], manifest))
        out.sort(key=lambda e: e.created_at, reverse=True)
        return out

    def production(self) -> str | None:
        value = self._read()["production"]
        return None if value is None else str(value)

    def stage(self, bundle_id: str) -> str | None:
        entry = self._read()["bundles"].get(bundle_id)
        return None if entry is None else str(entry["stage"])

    def history(self) -> list[dict[str, Any]]:
        return list(self._read()["history"])

    # ------------------------------------------------------------------------------------------- moves
    def register(self, bundle_id: str) -> None:
        """Record a freshly written bundle as a candidate (no-op if already known)."""
        with self.workspace.write_lock():
            state = self._read()
            if bundle_id in state["bundles"]:
                return
            state["bundles"][bundle_id] = {"stage": "candidate", "created_at": _now()}
            state["history"].append({"at": _now(), "event": "register", "bundle": bundle_id})
            self._write(state)

    def set_production(self, bundle_id: str, *, forced: bool = False, reason: str | None = None,
                       gate: dict[str, Any] | None = None, by: str | None = None,
                       allow_archived: bool = False) -> None:  # fmt: skip
        """Make ``bundle_id`` production after verifying it. Only candidates are promoted, except that a forced
        promotion (``allow_archived`` with a ``reason``) may bring an archived bundle back, e.g. over a corrupted
        production bundle."""
        with self.workspace.write_lock():
            state = self._read()
            entry = state["bundles"].get(bundle_id)
            if entry is None:
                raise BundleNotFoundError(f"{bundle_id} is not a registered bundle")
            archived_back = (
                entry["stage"] == "archived" and allow_archived and bool(reason and reason.strip())
            )
            if entry["stage"] != "candidate" and not archived_back:
                raise RegistryError(
                    f"{bundle_id} is {entry['stage']}, not a candidate; only candidates are promoted "
                    "(use `propensity models rollback` to return to an earlier production bundle, or "
                    "`propensity models promote ID --force --reason '...'` to bring an archived one back)"
                )
            self._verify(bundle_id, state["production"], "promote")
            previous = state["production"]
            if previous is not None:
                state["bundles"][previous]["stage"] = "archived"
            entry["stage"] = "production"
            state["production"] = bundle_id
            event = {"at": _now(), "event": "promote", "bundle": bundle_id, "previous": previous,
                     "forced": forced, "reason": reason, "gate": gate}  # fmt: skip
            if by is not None:
                event["by"] = by
            state["history"].append(event)
            self._write(state)

    def _verify(self, bundle_id: str, production: str | None, move: str) -> None:
        """Refuse to move the pointer to a bundle whose files do not match its manifest."""
        try:
            verify_bundle(self.path(bundle_id))
        except CorruptBundleError as exc:
            stays = f"production stays {production}" if production else "nothing is in production"
            raise CorruptBundleError(f"cannot {move} {bundle_id}: {exc} ({stays})") from None

    def _rollback_target(self, state: dict[str, Any]) -> tuple[str, str]:
        current = state["production"]
        if current is None:
            raise RegistryError("nothing is in production, so there is nothing to roll back")
        previous = self._previous_of(state, current)
        if previous is None:
            hint = ""
            try:
                verify_bundle(self.path(current))
            except CorruptBundleError:
                hint = (
                    f"; {current} is corrupted: replace it with a healthy bundle (`propensity models list`) "
                    "using `propensity models promote ID --force --reason '...'`"
                )
            raise RegistryError(
                f"{current} is the first production bundle; there is nothing to roll back to{hint}"
            )
        return str(current), previous

    def rollback_target(self) -> tuple[str, str]:
        """(production, the bundle a rollback would move to), without moving anything."""
        return self._rollback_target(self._read())

    def rollback(self, *, reason: str | None = None, by: str | None = None,
                 expect: tuple[str, str] | None = None) -> tuple[str, str]:  # fmt: skip
        """Move production back to the bundle that was production before; return (from, to). ``reason`` and
        ``by`` (who) are recorded in the history when given. The target is verified first: a corrupted one is
        refused (:class:`CorruptBundleError`) and production does not move. ``expect`` (from
        :meth:`rollback_target`, e.g. after loading that bundle) refuses the move if the registry changed since."""
        with self.workspace.write_lock():
            state = self._read()
            current, previous = self._rollback_target(state)
            if expect is not None and (current, previous) != expect:
                raise RegistryError(
                    f"the registry changed meanwhile (production is now {current}, a rollback would go to "
                    f"{previous}); nothing was moved: try again"
                )
            try:
                verify_bundle(self.path(previous))
            except CorruptBundleError as exc:
                raise CorruptBundleError(
                    f"cannot roll back to {previous}: {exc} Production stays {current}; to replace it, promote "
                    "a healthy bundle (`propensity models list`) with `propensity models promote ID --force "
                    "--reason '...'`"
                ) from None
            state["bundles"][current]["stage"] = "archived"
            state["bundles"][previous]["stage"] = "production"
            state["production"] = previous
            before = self._previous_of(state, previous)
            event = {
                "at": _now(),
                "event": "rollback",
                "bundle": previous,
                "previous": before,
                "from": current,
            }
            event.update({k: v for k, v in (("reason", reason), ("by", by)) if v is not None})
            state["history"].append(event)
            self._write(state)
            return current, previous

    @staticmethod
    def _previous_of(state: dict[str, Any], bundle_id: str) -> str | None:
        """The bundle that was production before ``bundle_id`` last became production (for chained rollbacks)."""
        for event in reversed(state["history"]):
            if event["event"] in ("promote", "rollback") and event["bundle"] == bundle_id:
                prev = event.get("previous")
                return None if prev is None else str(prev)
        return None
