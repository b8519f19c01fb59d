"""File drop: a run's rows as CSV, Parquet or JSON lines, with a manifest that is written last.

Layout: ``<workspace>/<path>/<destination>/<run_id>/scores.<ext>`` and ``manifest.json`` (row count, SHA-256 of
the data file, contract version, run id, times). The folder is built under a temporary name and renamed into
place in one step, so a reader (or a crash) never sees a drop without its manifest, and a drop that exists is
complete: publishing the run again leaves it alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from propensity.activation.destinations.base import PublishReport, PublishRun
from propensity.activation.publish_settings import FileDestination

_EXTENSIONS = {"csv": "csv", "parquet": "parquet", "jsonl": "jsonl"}
MANIFEST = "manifest.json"


class FileDrop:
    type = "file"
    realtime = False

    def __init__(self, spec: FileDestination, root: Path) -> None:
        self.spec = spec
        self.name = spec.name
        self.folder = (root / spec.path / spec.name).resolve()

    def drop_dir(self, run_id: str) -> Path:
        return self.folder / run_id

    def publish(self, run: PublishRun, rows: pa.Table) -> PublishReport:
        final = self.drop_dir(run.run_id)
        if (final / MANIFEST).exists():
            return PublishReport(
                self.name, self.type, "skipped", rows=rows.num_rows, location=str(final),
                message="already written (manifest present)",
            )  # fmt: skip
        manifest = write_drop(rows, final, self.spec.format, run)
        return PublishReport(
            self.name, self.type, "delivered", rows=rows.num_rows, sent=rows.num_rows, accepted=rows.num_rows,
            location=str(final), details={"file": manifest["file"], "sha256": manifest["sha256"]},
        )  # fmt: skip


def write_drop(rows: pa.Table, final: Path, fmt: str, run: PublishRun) -> dict[str, Any]:
    """Write ``rows`` and the manifest into ``final`` atomically; returns the manifest."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by an interrupted earlier attempt
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    data_name = f"scores.{_EXTENSIONS[fmt]}"
    data = tmp / data_name
    write_table(rows, data, fmt)
    manifest = {
        "run_id": run.run_id,
        "contract_version": run.contract_version,
        "model_version": run.model_version,
        "scored_at": run.scored_at.isoformat(),
        "expiration_at": run.expiration_at.isoformat(),
        "row_count": rows.num_rows,
        "format": fmt,
        "file": data_name,
        "sha256": file_sha256(data),
        "columns": rows.schema.names,
        "written_at": datetime.now(UTC).isoformat(),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    _fsync_dir_contents(tmp)
    if final.exists():  # a folder without a manifest: an incomplete drop from a crash before this design
        shutil.rmtree(final)
    os.replace(tmp, final)
    return manifest


def write_table(rows: pa.Table, path: Path, fmt: str) -> None:
    if fmt == "parquet":
        pq.write_table(rows, path, compression="zstd")
    elif fmt == "csv":
        pacsv.write_csv(rows, path)
    elif fmt == "jsonl":
        # DuckDB writes newline-delimited JSON in parallel, far faster than row-by-row Python.
        con = duckdb.connect()
        try:
            con.execute("SET TimeZone = 'UTC'")
            con.register("drop_rows", rows)
            # ISO 8601 timestamps ("2026-03-01T12:00:00.000000Z"), as in the CSV and the API.
            columns = ", ".join(
                f"strftime({_q(f.name)}, '%Y-%m-%dT%H:%M:%S.%fZ') AS {_q(f.name)}"
                if pa.types.is_timestamp(f.type)
                else _q(f.name)
                for f in rows.schema
            )
            con.execute(f"COPY (SELECT {columns} FROM drop_rows) TO '{_sql_path(path)}' (FORMAT JSON)")
        finally:
            con.close()
    else:
        raise ValueError(f"unknown file format {fmt!r}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def _fsync_dir_contents(folder: Path) -> None:
    for child in folder.iterdir():
        with child.open("rb") as fh:
            os.fsync(fh.fileno())
