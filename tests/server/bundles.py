"""Helpers for tests that change a registry: copy a shared workspace, corrupt a bundle's files."""

from __future__ import annotations

import shutil
from pathlib import Path

from propensity.workspace import Workspace


def copy_workspace(source: Workspace, root: Path) -> Workspace:
    """A private copy of ``source`` (its event log, bundles and registry) at ``root``."""
    shutil.copytree(source.root, root, ignore=shutil.ignore_patterns("write.lock"))
    return Workspace.open(root)


def corrupt_bundle(workspace: Workspace, bundle_id: str) -> Path:
    """Change one byte-range of a bundle's model file (a disk fault or a hand edit); returns the file."""
    model = next((workspace.state_dir / "models" / bundle_id).glob("*/model.txt"))
    model.chmod(0o644)
    model.write_text(model.read_text(encoding="utf-8").replace("leaf_value=", "leaf_value=1", 1))
    return model
