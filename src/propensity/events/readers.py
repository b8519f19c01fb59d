"""Read event files (CSV, Parquet, JSONL; gzip for the text formats) as a stream of Arrow batches.

Every batch carries ``__row``: the 1-based record number in its file (for CSV, row 1 is the first record after
the header), so a rejected row can be found again. Text formats are read as strings and parsed later, in one
place, so a bad value in row 9,000,000 becomes a quarantined row rather than a failed file. Records that cannot be
parsed at all (a CSV line with the wrong number of fields, a JSONL line that is not an object) are reported
through ``on_unreadable`` with their record number, and the stream continues.
"""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from propensity.core.errors import PropensityError

Format = Literal["csv", "parquet", "jsonl"]
ROW = "__row"
BATCH_ROWS = 500_000


class UnreadableFileError(PropensityError):
    """A file could not be opened or read at all (not a row-level problem)."""


@dataclass(frozen=True)
class UnreadableRecord:
    row_number: int
    reason: str
    raw: str


UnreadableSink = Callable[[UnreadableRecord], None]


def detect_format(path: Path) -> Format:
    """Guess the format from the file name: ``.csv``, ``.parquet``/``.pq``, ``.jsonl``/``.ndjson``/``.json``."""
    name = path.name.lower().removesuffix(".gz")
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith(".csv") or name.endswith(".tsv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    raise UnreadableFileError(
        f"{path}: cannot tell the format from the name; set `format:` on the source to csv, parquet or jsonl"
    )


def read_batches(
    path: Path,
    fmt: Format,
    *,
    delimiter: str = ",",
    quote: str = '"',
    header: bool = True,
    on_unreadable: UnreadableSink | None = None,
    batch_rows: int = BATCH_ROWS,
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Open ``path`` and return its schema (with ``__row``) and an iterator of batches in file order."""
    sink = on_unreadable or (lambda _record: None)
    try:
        if fmt == "parquet":
            schema, batches = _parquet(path, batch_rows)
        elif fmt == "csv":
            schema, batches = _csv(
                path, delimiter=delimiter, quote=quote, header=header, sink=sink, batch_rows=batch_rows
            )
        else:
            schema, batches = _jsonl(path, sink=sink, batch_rows=batch_rows)
    except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:
        raise UnreadableFileError(f"{path}: cannot be read as {fmt}: {exc}") from None
    return _name_unnamed(schema, batches)


def _name_unnamed(
    schema: pa.Schema, batches: Iterator[pa.RecordBatch]
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Columns without a name (a CSV header's trailing delimiter, a JSON key "") become ``column<position>``,
    as in a headerless CSV: SQL cannot refer to an empty name, and their values are kept like any extra."""
    names = list(schema.names)
    if all(n.strip() for n in names):
        return schema, batches
    taken = set(names)
    for i, n in enumerate(names):
        if not n.strip():
            new = f"column{i + 1}"
            while new in taken:
                new += "_"
            names[i] = new
            taken.add(new)
    renamed = pa.schema([f.with_name(n) for f, n in zip(schema, names, strict=True)])
    return renamed, (b.rename_columns(names) for b in batches)


def _with_rows(batch: pa.RecordBatch, first: int) -> pa.RecordBatch:
    rows = pa.array(range(first, first + batch.num_rows), type=pa.int64())
    return pa.RecordBatch.from_arrays([*batch.columns, rows], names=[*batch.schema.names, ROW])


def _parquet(path: Path, batch_rows: int) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    file = pq.ParquetFile(path)
    schema = file.schema_arrow.append(pa.field(ROW, pa.int64()))

    def batches() -> Iterator[pa.RecordBatch]:
        first = 1
        for batch in file.iter_batches(batch_size=batch_rows):
            yield _with_rows(batch, first)
            first += batch.num_rows

    return schema, batches()


def _open_text(path: Path) -> io.BufferedIOBase:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _csv(
    path: Path, *, delimiter: str, quote: str, header: bool, sink: UnreadableSink, batch_rows: int
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    with _open_text(path) as probe:
        first_line = probe.readline().decode("utf-8-sig").rstrip("\r\n")
    import csv

    names = next(csv.reader([first_line], delimiter=delimiter, quotechar=quote), [])
    if not header:
        names = [f"column{i + 1}" for i in range(len(names))]
    if not names or all(not n.strip() for n in names):
        empty = pa.schema([pa.field(ROW, pa.int64())])
        return empty, iter(())
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UnreadableFileError(f"{path}: the header repeats column name(s) {', '.join(dupes)}")
    skipped: list[int] = []  # data record numbers rejected by the parser, in order

    def handler(row: pacsv.InvalidRow) -> str:
        # row.number is the 1-based line number (known because the reader is single-threaded).
        number = (row.number or 0) - (1 if header else 0)
        skipped.append(number)
        sink(
            UnreadableRecord(
                number,
                f"malformed CSV record: expected {row.expected_columns} fields, found {row.actual_columns}",
                row.text[:2000],
            )
        )
        return "skip"

    read_options = pacsv.ReadOptions(
        use_threads=False, block_size=1 << 24, column_names=names, skip_rows=1 if header else 0
    )
    parse_options = pacsv.ParseOptions(delimiter=delimiter, quote_char=quote, invalid_row_handler=handler)
    convert_options = pacsv.ConvertOptions(
        column_types={n: pa.string() for n in names},
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        null_values=[""],  # only empty means missing: "NA" or "nan" are values to judge, not silent nulls
    )
    schema = pa.schema([pa.field(n, pa.string()) for n in names] + [pa.field(ROW, pa.int64())])

    def batches() -> Iterator[pa.RecordBatch]:
        stream = _open_text(path)
        try:
            reader = pacsv.open_csv(
                stream,
                read_options=read_options,
                parse_options=parse_options,
                convert_options=convert_options,
            )
            next_number = 1
            for batch in reader:
                # Number the good records, stepping over the ones the parser skipped while reading this block.
                numbers: list[int] = []
                while len(numbers) < batch.num_rows:
                    if skipped and skipped[0] == next_number:
                        skipped.pop(0)
                    else:
                        numbers.append(next_number)
                    next_number += 1
                for offset in range(0, batch.num_rows, batch_rows):
                    part = batch.slice(offset, batch_rows)
                    rows = pa.array(numbers[offset : offset + part.num_rows], type=pa.int64())
                    yield pa.RecordBatch.from_arrays([*part.columns, rows], names=[*part.schema.names, ROW])
        finally:
            stream.close()

    return schema, batches()


def _jsonl(
    path: Path, *, sink: UnreadableSink, batch_rows: int
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    # First pass: the union of keys, so every batch has the same columns (first seen order).
    keys: dict[str, None] = {}
    with _open_text(path) as f:
        for line in f:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                keys.update(dict.fromkeys(obj))
    names = list(keys)
    schema = pa.schema([pa.field(n, pa.string()) for n in names] + [pa.field(ROW, pa.int64())])

    def text(value: object) -> str | None:
        if value is None:
            return None
        if isinstance(value, str):
            return value
        return json.dumps(value)

    def batches() -> Iterator[pa.RecordBatch]:
        columns: dict[str, list[str | None]] = {n: [] for n in names}
        rows: list[int] = []
        with _open_text(path) as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    sink(
                        UnreadableRecord(
                            number, f"malformed JSON: {exc.args[0]}", line.decode(errors="replace")
                        )
                    )
                    continue
                if not isinstance(obj, dict):
                    sink(
                        UnreadableRecord(number, "JSON line is not an object", line.decode(errors="replace"))
                    )
                    continue
                for n in names:
                    columns[n].append(text(obj.get(n)))
                rows.append(number)
                if len(rows) >= batch_rows:
                    yield pa.RecordBatch.from_arrays(
                        [*(pa.array(columns[n], pa.string()) for n in names), pa.array(rows, pa.int64())],
                        schema=schema,
                    )
                    columns = {n: [] for n in names}
                    rows = []
        if rows:
            yield pa.RecordBatch.from_arrays(
                [*(pa.array(columns[n], pa.string()) for n in names), pa.array(rows, pa.int64())],
                schema=schema,
            )

    return schema, batches()
