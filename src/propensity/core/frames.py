"""Data frames in, data frames out: Arrow tables from whatever a user holds, and back to the same kind.

Every stage works on Arrow tables. A user may hold a pandas or Polars DataFrame, a PyArrow table or record batch,
or anything else that speaks the Arrow PyCapsule interface (``__arrow_c_stream__``: DuckDB relations, Polars,
pandas 2.2+, nanoarrow, ...). :func:`to_arrow` turns any of them into a :class:`pyarrow.Table`; :func:`like`
turns a result back into the kind the user passed (or leaves it as Arrow).

>>> import pyarrow as pa
>>> t = to_arrow({"customer_id": ["c1", "c2"], "spend": [3.5, None]})
>>> t.num_rows, t.schema.field("spend").type
(2, DataType(double))
>>> like(pa.table({"a": [1]}), t).column_names   # an Arrow original: the result stays Arrow
['customer_id', 'spend']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from propensity.core.errors import PropensityError


class FrameError(PropensityError, TypeError):
    """The value is not a table this package can read."""


def kind_of(obj: Any) -> str:
    """``pandas``, ``polars``, ``arrow`` or ``other``: what :func:`like` converts back to."""
    module = type(obj).__module__.split(".")[0]
    if module == "pandas":
        return "pandas"
    if module == "polars":
        return "polars"
    return "arrow"


def to_arrow(obj: Any, *, what: str = "table") -> pa.Table:
    """A :class:`pyarrow.Table` from an Arrow table or batch, a pandas or Polars DataFrame, a mapping of column
    name → values, or any object with ``__arrow_c_stream__``. Raises :class:`FrameError` naming the type."""
    if isinstance(obj, pa.Table):
        return obj
    if isinstance(obj, pa.RecordBatch):
        return pa.Table.from_batches([obj])
    module = type(obj).__module__.split(".")[0]
    if module == "pandas" and hasattr(obj, "columns"):
        # Column names must be text; an unnamed index (0, 1, ...) is not data and is left out.
        frame = obj.rename(columns=str) if any(not isinstance(c, str) for c in obj.columns) else obj
        return pa.Table.from_pandas(frame, preserve_index=False)
    if module == "polars" and hasattr(obj, "to_arrow"):
        table = obj.to_arrow()
        # Polars hands strings over as string_view / large_string; the stages expect plain types.
        return _plain_types(table)
    if hasattr(obj, "__arrow_c_stream__"):
        return _plain_types(pa.table(obj))
    if isinstance(obj, pa.RecordBatchReader):
        return obj.read_all()
    if hasattr(obj, "to_arrow_table"):  # a DuckDB relation
        return _plain_types(obj.to_arrow_table())
    if isinstance(obj, Mapping):
        return pa.table(dict(obj))
    raise FrameError(
        f"{what}: a {type(obj).__module__}.{type(obj).__name__} is not a table; pass a pandas or Polars "
        "DataFrame, a PyArrow table, or anything with __arrow_c_stream__"
    )


def _plain_types(table: pa.Table) -> pa.Table:
    """``large_string`` / ``string_view`` → ``string`` (and the binary equivalents) so SQL and encoders agree."""
    fields = []
    changed = False
    for f in table.schema:
        t = f.type
        if pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _t: False)(t):
            t = pa.string()
        elif pa.types.is_large_binary(t) or getattr(pa.types, "is_binary_view", lambda _t: False)(t):
            t = pa.binary()
        changed = changed or t != f.type
        fields.append(pa.field(f.name, t, f.nullable))
    return table.cast(pa.schema(fields)) if changed else table


def like(original: Any, table: pa.Table) -> Any:
    """``table`` as the kind of ``original``: a pandas or Polars DataFrame, else the Arrow table itself."""
    kind = kind_of(original)
    if kind == "pandas":
        return table.to_pandas()
    if kind == "polars":
        import polars as pl

        return pl.from_arrow(table)
    return table
