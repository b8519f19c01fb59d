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
    # The served model is a LightGBM text file or, when a linear model or blend is the champion, model.json.
    folder = workspace.state_dir / "models" / bundle_id
    model = next(p for pattern in ("*/model.txt", "*/model.json") for p in sorted(folder.glob(pattern)))
    model.chmod(0o644)
    text = model.read_text(encoding="utf-8")
    changed = text.replace("leaf_value=", "leaf_value=1", 1) if model.suffix == ".txt" else text + " "
    assert changed != text, f"nothing to corrupt in {model}"
    model.write_text(changed)
    return model
