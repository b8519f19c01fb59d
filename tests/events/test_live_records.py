"""JSON events to text columns: the column-wise path for flat objects equals the general loop on random batches."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from propensity.events.live import event_columns

_KEYS = ("event_id", "customer_id", "event_type", "event_time", "amount", "quantity", "sku", "category",
         "channel", "page", "device", "Page", "available_at", "properties")  # fmt: skip
_TEXT = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["2024-05-01T12:30:00Z", "2024-05-01", "1714566600", "  c1 ", "", "3.5", "true"]),
)
_VALUE = st.one_of(
    st.none(),
    _TEXT,
    st.integers(min_value=-(2**62), max_value=2**62),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(-9, 9), max_size=2),
    st.lists(st.integers(-9, 9), max_size=2),
)


def _is_json(record: bytes) -> bool:
    try:
        orjson.loads(record)
    except orjson.JSONDecodeError:
        return False
    return True


@st.composite
def _records(draw: Any) -> list[bytes]:
    """A batch: mostly plain records (text fields, numbers in amount/quantity), some anything."""
    plain = draw(st.booleans())
    n = draw(st.integers(min_value=1, max_value=12))
    out = []
    for _ in range(n):
        keys = draw(st.lists(st.sampled_from(_KEYS[:10] if plain else _KEYS), max_size=7, unique=True))
        record = {}
        for k in keys:
            if plain and k in ("amount", "quantity"):
                record[k] = draw(st.one_of(st.none(), st.integers(-1000, 1000), st.floats(-1e6, 1e6)))
            elif plain:
                record[k] = draw(st.one_of(st.none(), _TEXT))
            else:
                record[k] = draw(_VALUE)
        text = orjson.dumps(record, option=orjson.OPT_INDENT_2 if draw(st.integers(0, 9)) == 0 else 0)
        if not plain and draw(st.integers(0, 19)) == 0:
            text = draw(st.sampled_from([b"", b"not json", b"[1, 2]", b'"text"', b"7", b'{"a": 1} {"b": 2}']))
        out.append(text)
    return out


@settings(max_examples=120, deadline=None)
@given(_records())
def test_flat_objects_column_wise_equal_the_general_loop(records: list[bytes]) -> None:
    parsed_all = [orjson.loads(r) for r in records if _is_json(r)]
    if parsed_all:  # the flat objects' column-wise path equals the general loop
        general, general_errors = event_columns(parsed_all, fast=False)
        flat, flat_errors = event_columns(parsed_all)
        assert [e.to_json() for e in flat_errors] == [e.to_json() for e in general_errors]
        assert flat.equals(general)
