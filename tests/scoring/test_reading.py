"""The console's cached reads: kept while the workspace's stored state is unchanged, redone once it changes."""

from __future__ import annotations

import os
from pathlib import Path

from propensity.scoring.reading import memo
from propensity.workspace import Workspace


def test_memo_is_redone_when_the_duckdb_file_changes(tmp_path: Path) -> None:
    (tmp_path / "propensity.yaml").write_text("project: t\nactions:\n  - template: buy\n")
    ws = Workspace.open(tmp_path)
    calls: list[int] = []

    def read() -> int:
        calls.append(1)
        return len(calls)

    assert memo(ws, "n", read) == 1 and memo(ws, "n", read) == 1  # kept
    db = ws.state_dir / "propensity.duckdb"
    db.parent.mkdir(parents=True, exist_ok=True)
    db.write_bytes(b"x")  # something was stored
    assert memo(ws, "n", read) == 2 and memo(ws, "n", read) == 2
    db.write_bytes(b"xy")
    os.utime(db, ns=(1, 1))  # a different size (or time) is a change, whatever the clock says
    assert memo(ws, "n", read) == 3
    assert memo(ws, "other", read) == 4  # each name on its own
