"""Samples that let a labelled table's bundle be monitored as any other: the training rows' features (the
reference for feature drift) kept when it is trained, and each ``score --rows`` run's features, scores and, when
the rows carry the label, outcomes (the current side of feature drift, and calibration once outcomes are known).

An event-based bundle recomputes both sides from the event log; a labelled table's rows exist only in the files a
user passed, so a seeded sample of them is kept in the workspace (``state/monitoring/tables/``), without ids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from propensity.workspace import Workspace

SAMPLE_ROWS = 20_000
LABEL = "_label"  # the sample's outcome column (1/0), when known
SCORE_PREFIX = "_score:"  # the sample's score columns, one per action


def _folder(workspace: Workspace) -> Path:
    return workspace.state_dir / "monitoring" / "tables"


def training_sample_path(workspace: Workspace, bundle_id: str) -> Path:
    return _folder(workspace) / f"training-{bundle_id}.parquet"


def supplied_sample_path(workspace: Workspace, run_id: str) -> Path:
    return _folder(workspace) / f"run-{run_id}.parquet"


def keep_sample(table: pa.Table, path: Path, *, rows: int = SAMPLE_ROWS, seed: int = 0) -> None:
    """Write a seeded sample of ``table`` (all of it when it is small) to ``path``, atomically."""
    if table.num_rows > rows:
        picked = np.sort(np.random.default_rng(seed).choice(table.num_rows, size=rows, replace=False))
        table = table.take(pa.array(picked, pa.int64()))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def read_sample(path: Path) -> pa.Table | None:
    return pq.read_table(path) if path.exists() else None
