"""Destinations: thin adapters that take a run's canonical score rows somewhere (file, audience, webhook,
profile store). ``build_destinations(workspace)`` makes the ones ``propensity.yaml`` declares."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from propensity.activation.destinations.base import Destination, PublishReport, PublishRun
from propensity.config.destinations import (
    AnyDestination,
    AudienceDestination,
    FileDestination,
    ProfileDestination,
    WebhookDestination,
)
from propensity.core.errors import PropensityError
from propensity.workspace import Workspace

__all__ = [
    "Destination",
    "PublishReport",
    "PublishRun",
    "build_destination",
    "build_destinations",
    "state_dir",
]


class UnknownDestinationError(PropensityError):
    """A destination name the project does not declare."""


def state_dir(workspace: Workspace) -> Path:
    """Where activation keeps its state (outboxes, audience sync state, gate reports, the delivery ledger)."""
    path = workspace.state_dir / "activation"
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_destination(spec: AnyDestination, workspace: Workspace) -> Destination:
    if isinstance(spec, FileDestination):
        from propensity.activation.destinations.files import FileDrop

        return FileDrop(spec, workspace.root)
    if isinstance(spec, AudienceDestination):
        from propensity.activation.destinations.attributes import WorkspaceAttributes
        from propensity.activation.destinations.audience import AudienceSync

        return AudienceSync(
            spec, state_dir(workspace) / f"{spec.name}.audience.sqlite", WorkspaceAttributes(workspace)
        )
    if isinstance(spec, WebhookDestination):
        from propensity.activation.destinations.webhook import Webhook

        return Webhook(spec, state_dir(workspace) / f"{spec.name}.outbox.sqlite")
    if isinstance(spec, ProfileDestination):
        from propensity.activation.destinations.profile import ProfileStore

        return ProfileStore(spec)
    raise TypeError(f"not a destination spec: {spec!r}")


def destination_specs(workspace: Workspace, names: Sequence[str] | None = None) -> list[AnyDestination]:
    """The declared destinations (``names`` selects some), checking names are unique and known."""
    specs: list[AnyDestination] = list(workspace.spec.destinations)
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        if spec.name in seen:
            raise PropensityError(
                f"destinations[{i}].name: {spec.name!r} is declared twice; names must be unique"
            )
        seen.add(spec.name)
    if names:
        unknown = [n for n in names if n not in seen]
        if unknown:
            declared = ", ".join(sorted(seen)) or "none (add a `destinations:` section to propensity.yaml)"
            raise UnknownDestinationError(
                f"unknown destination(s) {', '.join(unknown)}; declared: {declared}"
            )
        specs = [s for s in specs if s.name in names]
    return specs


def build_destinations(workspace: Workspace, names: Sequence[str] | None = None) -> list[Destination]:
    return [build_destination(spec, workspace) for spec in destination_specs(workspace, names)]
