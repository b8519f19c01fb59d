"""A ``where:`` predicate means the same in SQL (DuckDB) and in Python, including floats on the literal's edge."""

from __future__ import annotations

from typing import Any

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from propensity.config.predicates import parse_predicate

NUMBERS = st.one_of(
    st.none(),
    st.sampled_from([0.0, -0.0, 0.1, 0.2, 0.30000000000000004, 0.3, 49.99, 50.0, 1e-300, 1e300]),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
)
TEXTS = st.one_of(
    st.none(), st.sampled_from(["", "a", "shoes", "Shoes", "é", "z", "it's"]), st.text(max_size=4)
)
OPS = ["==", "!=", ">", ">=", "<", "<="]


@st.composite
def predicates(draw: st.DrawFn) -> str:
    terms = []
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(["amount", "quantity", "category", "properties.device"]))
        if field in ("amount", "quantity"):
            literal = repr(draw(st.sampled_from([0.1, 0.3, 49.99, 50.0, 0.0, -1.5, 1e300])))
            literal = literal.lstrip("-") if not draw(st.booleans()) else literal
            if literal.startswith("-"):
                literal = "- " + literal[1:]
        else:
            literal = "'" + draw(st.sampled_from(["a", "shoes", "é", "", "it\\'s"])) + "'"
        if draw(st.booleans()) and field not in ("amount", "quantity"):
            terms.append(f"{field} in ({literal}, 'z')")
        else:
            terms.append(f"{field} {draw(st.sampled_from(OPS))} {literal}")
    return " and ".join(terms)


@settings(max_examples=150, deadline=None)
@given(text=predicates(), rows=st.lists(st.tuples(NUMBERS, NUMBERS, TEXTS, TEXTS), min_size=1, max_size=8))
def test_sql_and_python_agree(text: str, rows: list[tuple[Any, Any, Any, Any]]) -> None:
    pred = parse_predicate(text)
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE e (i INTEGER, amount DOUBLE, quantity DOUBLE, category VARCHAR, device VARCHAR)"
    )
    con.executemany("INSERT INTO e VALUES (?, ?, ?, ?, ?)", [(i, *r) for i, r in enumerate(rows)])

    def column(field: str) -> str:
        return "device" if field == "properties.device" else field

    sql = f"SELECT i, COALESCE({pred.sql(column)}, FALSE) FROM e ORDER BY i"
    in_sql = [bool(v) for _, v in con.execute(sql).fetchall()]
    names = {"amount": 0, "quantity": 1, "category": 2, "properties.device": 3}
    check = pred.python(lambda field: lambda row: row[names[field]])
    in_python = [check(r) for r in rows]
    assert in_sql == in_python, (text, rows)
