"""Reading a whole table a user brings (a labelled table, an experiment's assignments and outcomes).

Unlike an event source, such a table is read whole and typed by its content: Parquet keeps its types; CSV is read
as text (one odd value can never fail the file) and each column becomes a number when every value is one, a
yes/no column when every value is a yes/no word, and text otherwise. JSONL goes through DuckDB's reader.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "t.csv").write_text("id,age,member,city\\n1,31,TRUE,Oslo\\n2,,false,\\n3,40.5,True,Rome\\n")
>>> t = read_table_file(d / "t.csv")
>>> [(f.name, str(f.type)) for f in t.schema]
[('id', 'int64'), ('age', 'double'), ('member', 'bool'), ('city', 'string')]
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from propensity.core.errors import PropensityError
from propensity.core.values import is_booleanish, numeric_text


class TableReadError(PropensityError):
    """A table file cannot be read (missing, unknown format, unparseable)."""


def _format(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    for suffix, fmt in ((".parquet", "parquet"), (".pq", "parquet"), (".csv", "csv"), (".tsv", "csv"),
                        (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "jsonl")):  # fmt: skip
        if name.endswith(suffix):
            return fmt
    raise TableReadError(f"{path}: unknown table format; use .parquet, .csv(.gz) or .jsonl(.gz)")


def type_text_columns(table: pa.Table) -> pa.Table:
    """Text columns whose values are all numbers → int64 / float64; all yes/no words → bool; others stay."""
    cols = []
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            arr = col.combine_chunks() if col.num_chunks else pa.array([], pa.string())
            num = numeric_text(arr)
            if num is not None:
                v = num.to_numpy(zero_copy_only=False)
                finite = v[~(v != v)]
                whole = len(finite) and bool((finite == finite.round()).all()) and abs(finite).max() < 2**53
                cols.append(num.cast(pa.int64()) if whole else num)
                continue
            if is_booleanish(arr):
                low = pc.utf8_lower(pc.utf8_trim_whitespace(arr))
                truthy = pc.is_in(low, value_set=pa.array(["1", "true", "t", "yes", "y", "on"]))
                cols.append(pc.if_else(pc.is_null(arr), pa.scalar(None, pa.bool_()), truthy))
                continue
            cols.append(arr.cast(pa.string()))
        else:
            cols.append(col)
    return pa.table(dict(zip(table.column_names, cols, strict=True)))


def read_table_file(path: str | Path, *, delimiter: str | None = None) -> pa.Table:
    """Read a table file (Parquet, CSV or JSONL, gzip allowed) into Arrow, typed as the module says."""
    p = Path(path)
    if not p.exists():
        raise TableReadError(f"{p}: no such file")
    fmt = _format(p)
    con = duckdb.connect()
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(p)
        if fmt == "csv":
            delim = delimiter or ("\t" if ".tsv" in p.name.lower() else ",")
            rel = con.sql(
                "SELECT * FROM read_csv(?, all_varchar = true, header = true, delim = ?, sample_size = -1)",
                params=[str(p), delim],
            )
            return type_text_columns(rel.to_arrow_table())
        rel = con.sql(
            "SELECT * FROM read_json_auto(?, format = 'newline_delimited', sample_size = -1)", params=[str(p)]
        )
        return rel.to_arrow_table()
    except duckdb.Error as exc:
        raise TableReadError(f"{p}: cannot be read as {fmt}: {exc}") from None
    finally:
        con.close()
