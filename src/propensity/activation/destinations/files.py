"""File drop: a run's rows as CSV, Parquet or JSON lines, with a manifest that is written last.

Layout: ``<workspace>/<path>/<destination>/<run_id>/scores.<ext>`` and ``manifest.json`` (row count, SHA-256 of
the data file, contract version, run id, times). The folder is built under a temporary name and renamed into
place in one step, so a reader (or a crash) never sees a drop without its manifest, and a drop that exists is
complete: publishing the run again leaves it alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from propensity.activation.destinations.base import PublishReport, PublishRun
from propensity.config.destinations import FileDestination

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


ISO_UTC = "%Y-%m-%dT%H:%M:%SZ"  # Arrow's %S carries the fraction: 2026-03-01T12:00:00.000000Z
_BATCH_ROWS = 64 * 1024


def write_table(rows: pa.Table, path: Path, fmt: str) -> None:
    """Write ``rows`` to ``path`` as parquet, CSV or JSON lines; timestamps in text formats as ISO 8601 UTC."""
    if fmt == "parquet":
        pq.write_table(rows, path, compression="zstd")
    elif fmt == "csv":
        # Arrow's own formatting of zoned timestamps is several times slower than the rest of the row.
        pacsv.write_csv(_iso_timestamps(rows), path)
    elif fmt == "jsonl":
        # Arrow's kernels release the GIL: batches are encoded on threads and written in order.
        with path.open("wb") as fh, ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for chunk in pool.map(_jsonl_bytes, rows.to_batches(max_chunksize=_BATCH_ROWS)):
                fh.write(chunk)
    else:
        raise ValueError(f"unknown file format {fmt!r}")


def _iso_timestamps(rows: pa.Table) -> pa.Table:
    for i, f in enumerate(rows.schema):
        if pa.types.is_timestamp(f.type):
            rows = rows.set_column(i, f.name, _iso(rows.column(i).combine_chunks()))
    return rows


def _iso(col: pa.Array) -> pa.Array:
    """ISO 8601 text of a timestamp column. A run's timestamps take few distinct values and Arrow's strftime is
    slow (time zone lookups per value), so each distinct value is formatted once."""
    encoded = pc.dictionary_encode(col)
    return pc.take(pc.strftime(encoded.dictionary, format=ISO_UTC), encoded.indices)


_FEW = 1024  # a column with at most this many distinct values in a batch is encoded once per distinct value


def _jsonl_bytes(batch: pa.RecordBatch) -> pa.Buffer:
    """The batch as JSON lines, built column-wise with Arrow kernels (no Python loop over rows).

    Most columns of a run take few distinct values (the action, segment, model, run id, times, policy, consent):
    each run of such neighbouring columns becomes one piece, its JSON text built once per distinct combination
    of their values, so joining a line takes a handful of pieces rather than two per column (the join's cost
    grows with its pieces)."""
    pieces: list[pa.Array | str] = []
    few: list[tuple[str, pa.Array, np.ndarray]] = []  # the current run: (key, texts of its values, codes)

    def close_run() -> None:
        if few:
            pieces.extend(_combined(few))
            few.clear()

    for i, f in enumerate(batch.schema):
        key = ("{" if i == 0 else ",") + json.dumps(f.name) + ":"
        coded = _few_values(batch.column(i))
        if coded is None:
            close_run()
            pieces += [key, _json_values(batch.column(i))]
            continue
        if math.prod(len(t) for _, t, _ in few) * len(coded[0]) > 1 << 62:
            close_run()  # the combined codes would overflow int64
        few.append((key, *coded))
    close_run()
    pieces.append("}\n")
    lines = pc.binary_join_element_wise(*pieces, "").cast(pa.large_string())
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]
    data = lines.buffers()[2]
    # The lines' bytes as they lie in Arrow's buffer (written from there, not copied first).
    return pa.py_buffer(b"") if data is None else data.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def _few_values(col: pa.Array) -> tuple[pa.Array, np.ndarray] | None:
    """A column of few distinct values as (the JSON text of each distinct value then ``null``, each row's code
    into it), or None when it has many (or a type dictionary encoding does not take)."""
    try:
        encoded = pc.dictionary_encode(col)
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return None
    k = len(encoded.dictionary)
    if k > _FEW:
        return None
    texts = pa.concat_arrays([_json_values(encoded.dictionary).cast(pa.string()), pa.array(["null"])])
    codes = encoded.indices.fill_null(k).to_numpy(zero_copy_only=False).astype(np.int64)
    return texts, codes


def _combined(run: list[tuple[str, pa.Array, np.ndarray]]) -> list[pa.Array | str]:
    """The pieces of a run of few-valued columns (keys included): one text per row, each distinct combination of
    their values written once (in Python) and taken for its rows; a key and a column's texts each when the
    combinations are too many for that to pay."""
    n = len(run[0][2])
    code = np.zeros(n, dtype=np.int64)
    for _, texts, codes in run:
        code = code * len(texts) + codes
    combos = pc.dictionary_encode(pa.array(code))
    keys = combos.dictionary.to_numpy()
    if len(run) > 1 and len(keys) * len(run) > n:
        out: list[pa.Array | str] = []
        for key, texts, codes in run:
            out += [key, pc.take(texts, pa.array(codes))]
        return out
    parts: list[list[str]] = [[] for _ in range(len(keys))]
    for key, texts, _ in reversed(run):
        values = texts.to_pylist()
        keys, digit = np.divmod(keys, len(texts))
        for j, d in enumerate(digit.tolist()):
            parts[j].append(key + values[d])
    joined = pa.array(["".join(reversed(p)) for p in parts], pa.string())
    return [pc.take(joined, combos.indices)]


def _json_values(col: pa.Array) -> pa.Array:
    """Each value as JSON text; ``null`` for nulls (and for NaN and infinities, which JSON cannot hold)."""
    typ = col.type
    if pa.types.is_timestamp(typ):
        text = _quoted(_iso(col))
    elif pa.types.is_string(typ) or pa.types.is_large_string(typ):
        # Most text columns of a run repeat a few values (action, segment, model, run id): each distinct value
        # is escaped once.
        encoded = pc.dictionary_encode(col)
        text = pc.take(_json_strings(encoded.dictionary), encoded.indices)
    elif pa.types.is_floating(typ):
        text = pc.if_else(pc.is_finite(col), pc.cast(col, pa.string()), pa.scalar(None, pa.string()))
    elif pa.types.is_boolean(typ) or pa.types.is_integer(typ):
        text = pc.cast(col, pa.string())
    else:
        text = pa.array(
            [None if v is None else json.dumps(v, default=str) for v in col.to_pylist()], pa.string()
        )
    return pc.fill_null(text, "null")


def _json_strings(col: pa.Array) -> pa.Array:
    if pc.any(pc.match_substring_regex(col, r"[\x00-\x1f]")).as_py():
        return pa.array([None if v is None else json.dumps(v) for v in col.to_pylist()], pa.string())
    return _quoted(pc.replace_substring(pc.replace_substring(col, "\\", "\\\\"), '"', '\\"'))


def _quoted(text: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise('"', text, '"', "")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir_contents(folder: Path) -> None:
    for child in folder.iterdir():
        with child.open("rb") as fh:
            os.fsync(fh.fileno())
