"""File drop: CSV / Parquet / JSONL with a manifest, atomic, written once per run."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.activation.destinations_fixtures import canonical_rows

from propensity.activation.destinations.base import PublishRun
from propensity.activation.destinations.files import MANIFEST, FileDrop, file_sha256, write_table
from propensity.config.destinations import FileDestination


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_drop_has_every_row_and_a_manifest_that_checks_out(tmp_path: Path, fmt: str) -> None:
    rows = canonical_rows(50)
    drop = FileDrop(FileDestination(name="drop", format=fmt), tmp_path)  # type: ignore[arg-type]
    run = PublishRun.from_rows(rows, contract_version="1.0")
    report = drop.publish(run, rows)
    assert report.status == "delivered" and report.sent == 100
    folder = tmp_path / "exports" / "drop" / "run-1"
    manifest = json.loads((folder / MANIFEST).read_text())
    data = folder / manifest["file"]
    assert manifest["row_count"] == 100
    assert manifest["sha256"] == file_sha256(data)
    assert (manifest["run_id"], manifest["contract_version"]) == ("run-1", "1.0")
    assert manifest["columns"] == rows.schema.names
    if fmt == "parquet":
        back = pq.read_table(data)
        assert back.equals(rows)
    elif fmt == "csv":
        with data.open() as fh:
            lines = list(csv.DictReader(fh))
        assert len(lines) == 100 and lines[0]["scored_at"].startswith("2026-03-01")
        assert {r["customer_id"] for r in lines} == {f"c{i}" for i in range(50)}
    else:
        lines = [json.loads(line) for line in data.read_text().splitlines()]
        assert len(lines) == 100
        assert lines[0]["scored_at"] == "2026-03-01T12:00:00.000000Z"
        assert lines[0]["expiration_at"] == "2026-03-02T12:00:00.000000Z"
        assert sorted(r["score"] for r in lines) == sorted(rows.column("score").to_pylist())


def test_publishing_the_same_run_again_leaves_the_drop_alone(tmp_path: Path) -> None:
    rows = canonical_rows(10)
    drop = FileDrop(FileDestination(name="drop"), tmp_path)
    run = PublishRun.from_rows(rows)
    drop.publish(run, rows)
    manifest = drop.drop_dir("run-1") / MANIFEST
    before = manifest.stat().st_mtime_ns
    again = drop.publish(run, rows)
    assert again.status == "skipped"
    assert manifest.stat().st_mtime_ns == before


_SLOW_DROP = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import propensity.activation.destinations.files as files
    sys.path.insert(0, sys.argv[2])
    from tests.activation.destinations_fixtures import canonical_rows
    from propensity.activation.destinations.base import PublishRun
    from propensity.config.destinations import FileDestination

    real = files.write_table
    def slow(rows, path, fmt):
        real(rows, path, fmt)
        print("written", flush=True)
        time.sleep(60)  # killed here: data file complete, manifest not yet written
    files.write_table = slow
    rows = canonical_rows(200)
    files.FileDrop(FileDestination(name="drop"), Path(sys.argv[1])).publish(PublishRun.from_rows(rows), rows)
    """
)


def test_kill_9_mid_export_leaves_no_drop_and_the_rerun_writes_it_once(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_DROP, str(tmp_path), str(repo)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "written"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    folder = tmp_path / "exports" / "drop"
    assert not (folder / "run-1").exists()  # nothing half-written is visible under the run's name
    rows = canonical_rows(200)
    report = FileDrop(FileDestination(name="drop"), tmp_path).publish(PublishRun.from_rows(rows), rows)
    assert report.status == "delivered"
    assert sorted(p.name for p in folder.iterdir()) == ["run-1"]  # the leftover temporary folder is gone
    assert pq.read_table(folder / "run-1" / "scores.parquet").num_rows == 400


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(st.one_of(st.none(), st.text(max_size=12)), min_size=1, max_size=20),
    floats=st.lists(
        st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)), min_size=20, max_size=20
    ),
)
def test_jsonl_lines_parse_back_to_the_values(texts: list[str | None], floats: list[float | None]) -> None:
    import tempfile

    n = len(texts)
    table = pa.table(
        {
            "text": pa.array(texts, pa.string()),
            "x": pa.array(floats[:n], pa.float64()),
            "flag": pa.array([i % 2 == 0 for i in range(n)]),
            "at": pa.array(
                [datetime(2026, 3, 1, 12, 0, 0, i, tzinfo=UTC) for i in range(n)],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.jsonl"
        write_table(table, path, "jsonl")
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]
    assert [r["text"] for r in lines] == texts
    expected = [None if v is None or not math.isfinite(v) else v for v in floats[:n]]
    assert [r["x"] for r in lines] == expected
    assert [r["flag"] for r in lines] == [i % 2 == 0 for i in range(n)]
    assert lines[-1]["at"] == f"2026-03-01T12:00:00.{n - 1:06d}Z"


def test_jsonl_of_many_and_few_valued_columns_parses_back_to_the_rows(tmp_path: Path) -> None:
    """Columns of few distinct values are written once per combination, the others value by value, and a run of
    few-valued columns whose combinations are nearly all distinct column by column: every line is the row."""
    n = 3000
    rng = np.random.default_rng(3)
    table = pa.table(
        {
            "id": pa.array([f'c"{i}' for i in range(n)]),  # all distinct (and needing escapes)
            "action": pa.array(rng.choice(["buy", "churn", None], n).tolist(), pa.string()),
            "x": pa.array(rng.choice([0.5, 0.25, float("nan")], n)),
            "score": pa.array(rng.random(n)),
            "a": pa.array(rng.integers(0, 1000, n)),  # few-valued, yet with b nearly every pair distinct
            "b": pa.array(rng.integers(0, 1000, n)),
            "flag": pa.array(rng.random(n) > 0.5),
        }
    )
    path = tmp_path / "t.jsonl"
    write_table(table, path, "jsonl")
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    expected = table.to_pylist()
    for row in expected:
        row["x"] = None if row["x"] != row["x"] else row["x"]
    assert lines == expected
