"""Reading the values users put in their tables: yes/no answers written a dozen ways, ids, numbers as text.

Public data sets write a binary label as ``TRUE``/``FALSE``, ``Yes``/``No``, ``1``/``0``, ``1.0``, ``t``/``f``,
``churned``/… ; an id may be an integer column. These helpers read them in one place, and say which rows could
not be read and why, instead of guessing or dropping them.

>>> import pyarrow as pa
>>> r = read_binary(pa.array(["Yes", "no", "TRUE", None, "1.0", "maybe"]))
>>> r.values.to_pylist(), r.missing, r.unreadable
([1, 0, 1, None, 1, None], 1, {'maybe': 1})
>>> read_binary(pa.array(["churned", "stayed", "churned"]), positive="churned").values.to_pylist()
[1, 0, 1]
>>> id_text(pa.array([7, None, 12])).to_pylist()
['7', None, '12']
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from propensity.core.errors import PropensityError

TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y", "on", "positive", "pos"})
FALSE_WORDS = frozenset({"0", "false", "f", "no", "n", "off", "negative", "neg"})


class ValueReadError(PropensityError):
    """A column cannot be read the way it is needed (a label with three values, say)."""


@dataclass
class BinaryColumn:
    """A column read as 0/1: ``values`` (int8, null where missing or unreadable), how many were missing, and
    each unreadable value with its count."""

    values: pa.Array
    missing: int
    unreadable: dict[str, int] = field(default_factory=dict)
    positive: str | None = None  # the text that meant 1, when the column was text


def _text_key(value: str) -> str:
    v = value.strip().lower()
    # "1.0", "0.0" (floats written as text)
    try:
        f = float(v)
    except ValueError:
        return v
    if f == 1.0:
        return "1"
    if f == 0.0:
        return "0"
    return v


def read_binary(
    column: pa.Array | pa.ChunkedArray, *, positive: str | None = None, what: str = "column"
) -> BinaryColumn:
    """Read ``column`` as 0/1.

    Booleans are themselves; numbers must be 0 or 1 (``1.0`` included); text is matched case-insensitively
    against the usual words (``true/false``, ``yes/no``, ``y/n``, ``t/f``, ``1/0``, ``1.0/0.0``). Text with
    exactly two other values needs ``positive`` (the value that means 1), else :class:`ValueReadError` says so.
    With ``positive`` given, that value is 1 and every other non-null value 0.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    if pa.types.is_dictionary(column.type):
        column = column.cast(pa.string())
    n = len(column)
    missing = int(column.null_count)
    if pa.types.is_boolean(column.type) and positive is None:
        return BinaryColumn(column.cast(pa.int8()), missing)
    if (
        pa.types.is_integer(column.type)
        or pa.types.is_floating(column.type)
        or pa.types.is_decimal(column.type)
    ) and positive is None:
        v = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
        ok = np.isin(v, (0.0, 1.0))
        nan = np.isnan(v)
        bad = ~ok & ~nan
        counts = Counter(_num_text(x) for x in v[bad].tolist())
        out = np.where(ok, v, 0).astype(np.int8)
        return BinaryColumn(
            pa.array(out, pa.int8(), mask=~ok),
            missing + int((nan & ~np.asarray(pc.is_null(column).to_numpy(zero_copy_only=False), bool)).sum()),
            dict(counts),
        )
    text = column.cast(pa.string())
    values: list[int | None] = [None] * n
    unreadable: Counter[str] = Counter()
    raw = text.to_pylist()
    if positive is not None:
        want = positive.strip()
        for i, v in enumerate(raw):
            if v is not None:
                values[i] = 1 if v.strip() == want else 0
        return BinaryColumn(pa.array(values, pa.int8()), missing, {}, positive=want)
    words = Counter(_text_key(v) for v in raw if v is not None)
    known = {w for w in words if w in TRUE_WORDS or w in FALSE_WORDS}
    others = [w for w in words if w not in known]
    if not known and len(others) == 2:
        a, b = sorted(others)
        raise ValueReadError(
            f"{what}: its values are {a!r} and {b!r}; say which one means 1 (e.g. --positive {b!r}, or "
            "`positive:` in the spec)"
        )
    if not known and len(others) > 2:
        sample = ", ".join(repr(o) for o in sorted(others)[:5])
        raise ValueReadError(
            f"{what}: {len(others)} different values ({sample}, ...) do not read as a yes/no answer; a label must "
            "be binary (true/false, yes/no, 1/0), or name the positive value"
        )
    for i, v in enumerate(raw):
        if v is None:
            continue
        k = _text_key(v)
        if k in TRUE_WORDS:
            values[i] = 1
        elif k in FALSE_WORDS:
            values[i] = 0
        else:
            unreadable[v] += 1
    return BinaryColumn(pa.array(values, pa.int8()), missing, dict(unreadable))


def _num_text(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def id_text(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Ids as text: integers without a decimal point (``7``, not ``7.0``), text trimmed, empty → null."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    t = column.type
    if pa.types.is_floating(t):
        v = column.to_numpy(zero_copy_only=False)
        whole = np.isfinite(v) & (np.floor(v) == v)
        text = [
            None if (x != x) else (str(int(x)) if w else repr(float(x)))
            for x, w in zip(v.tolist(), whole.tolist(), strict=True)
        ]
        return pa.array(text, pa.string())
    if pa.types.is_dictionary(t):
        column = column.cast(pa.string())
    text = column.cast(pa.string())
    text = pc.utf8_trim_whitespace(text)
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


def is_booleanish(column: pa.Array | pa.ChunkedArray) -> bool:
    """Whether a text column's non-null values are all yes/no words (``TRUE``/``False``, ``yes``/``no``, ...)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return False
    values = pc.unique(column.drop_null()).to_pylist()
    if not values:
        return False
    keys = {v.strip().lower() for v in values}
    words = (TRUE_WORDS | FALSE_WORDS) - {"1", "0"}
    return keys <= (TRUE_WORDS | FALSE_WORDS) and bool(keys & words)


def numeric_text(column: pa.Array | pa.ChunkedArray) -> pa.Array | None:
    """A text column whose non-null values all parse as numbers, as float64 (else None)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return None
    trimmed = pc.utf8_trim_whitespace(column)
    trimmed = pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)
    if trimmed.null_count == len(trimmed):
        return None
    try:
        return trimmed.cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
