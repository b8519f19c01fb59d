"""The two tiny expression languages of feature definitions, each compiled to both SQL and Python.

* A **predicate** (``where:``) filters events: comparisons ``field op literal`` joined with ``and``::

      category == 'shoes' and amount > 50
      channel in ('web', 'app') and properties.device != 'mobile'

  ``op`` is one of ``== != > >= < <= in``. A field is a typed event column (``amount``, ``quantity``,
  ``currency``, ``sku``, ``category``, ``campaign_id``, ``channel``, ``plan``) or ``properties.<key>`` (text).
  Numeric fields compare with numbers, text fields with quoted strings. A comparison with a missing (null)
  value is false, in both engines.

* An **arithmetic expression** (``expr:`` of a derived feature) combines other features with ``+ - * /``,
  parentheses, numbers and unary minus. Any null operand gives null, and division by zero gives null
  ("safe on zero")::

      cart_adds_7d / page_views_7d
      (purchases_30d - refunds_30d) / (1 + sessions_30d)

Both are parsed by hand here (never ``eval``) into small immutable trees. The same tree renders to SQL (the
offline engine) and to a Python closure (the online engine), so both engines apply identical comparisons on
identical IEEE doubles.

>>> p = parse_predicate("category == 'shoes' and amount > 50")
>>> p.sql(lambda f: f)
"(category = 'shoes' AND amount > CAST('50.0' AS DOUBLE))"
>>> sorted(p.fields())
['amount', 'category']
>>> e = parse_expression("a / (b - 2)")
>>> e.evaluate({"a": 1.0, "b": 2}.__getitem__) is None
True
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from propensity.core.event import NUMERIC_PROPERTIES, TEXT_PROPERTIES

PROPERTIES_PREFIX = "properties."
# How text values are read as numbers, booleans and dates, the same way in SQL and in Python.
NUMBER_PATTERN = r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$"
DATE_PATTERN = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?$"
DATE_TZ_PATTERN = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})$"
TRUE_WORDS = ("true", "t", "yes", "y", "1")
FALSE_WORDS = ("false", "f", "no", "n", "0")
_PROPERTY_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|\d+(?:[eE][+-]?\d+)?)
      | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)
      | (?P<op>==|!=|>=|<=|>|<|\(|\)|,|\+|-|\*|/)
    )""",
    re.VERBOSE,
)


class ExpressionError(ValueError):
    """A ``where:`` predicate or a derived ``expr:`` cannot be parsed or refers to something unknown."""


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ExpressionError(f"cannot read {text[pos:].strip()!r} in {text!r}")
        kind = m.lastgroup
        assert kind is not None
        tokens.append((kind, m.group(kind)))
        pos = m.end()
    return tokens


def _unquote(token: str) -> str:
    body = token[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


# ---------------------------------------------------------------------------------------------- predicates


# The calendar date of an event's event_time in the project's time zone, as 'YYYY-MM-DD' text: count_distinct
# over it counts active days; it compares with dates in `where:` (event_date >= '2017-06-01').
EVENT_DATE = "event_date"


def field_kind(field: str) -> str:
    """``'number'`` or ``'text'`` for an event field usable in features; raise for an unknown one."""
    if field == EVENT_DATE:
        return "text"
    if field in NUMERIC_PROPERTIES:
        return "number"
    if field in TEXT_PROPERTIES:
        return "text"
    if field.startswith(PROPERTIES_PREFIX) and _PROPERTY_KEY.match(field[len(PROPERTIES_PREFIX) :]):
        return "text"
    known = ", ".join((*NUMERIC_PROPERTIES, *TEXT_PROPERTIES, EVENT_DATE))
    raise ExpressionError(f"{field!r} is not an event property; use one of {known} or properties.<key>")


_SQL_OPS = {"==": "=", "!=": "<>", ">": ">", ">=": ">=", "<": "<", "<=": "<="}
_PY_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def sql_literal(value: str | float) -> str:
    """A literal that DuckDB (and ANSI SQL engines) read back as exactly this Python value."""
    if isinstance(value, float):
        return f"CAST('{value!r}' AS DOUBLE)"
    return "'" + value.replace("'", "''") + "'"


LiteralSpelling = Callable[[str | float], str]


@dataclass(frozen=True)
class Comparison:
    """``field op literal`` (or ``field in (literals)``); a null field value never matches."""

    field: str
    op: str
    values: tuple[str | float, ...]

    def sql(self, column: Callable[[str], str], literal: LiteralSpelling = sql_literal) -> str:
        col = column(self.field)
        if self.op == "in":
            return f"{col} IN ({', '.join(literal(v) for v in self.values)})"
        return f"{col} {_SQL_OPS[self.op]} {literal(self.values[0])}"

    def text(self) -> str:
        if self.op == "in":
            return f"{self.field} in ({', '.join(_show(v) for v in self.values)})"
        return f"{self.field} {self.op} {_show(self.values[0])}"

    def python(self, getter: Callable[[Any], Any]) -> Callable[[Any], bool]:
        if self.op == "in":
            allowed = frozenset(self.values)

            def is_in(event: Any) -> bool:
                v = getter(event)
                return v is not None and v in allowed

            return is_in
        fn = _PY_OPS[self.op]
        literal = self.values[0]

        def compare(event: Any) -> bool:
            v = getter(event)
            return v is not None and fn(v, literal)

        return compare


def _show(value: str | float) -> str:
    return repr(value) if isinstance(value, float) else "'" + value.replace("'", "\\'") + "'"


@dataclass(frozen=True)
class Predicate:
    """A conjunction of comparisons. ``text()`` is its canonical spelling (used in the version hash)."""

    terms: tuple[Comparison, ...]

    def fields(self) -> set[str]:
        return {t.field for t in self.terms}

    def sql(self, column: Callable[[str], str], literal: LiteralSpelling = sql_literal) -> str:
        """SQL for the conjunction; ``literal`` spells constants (another engine's dialect may need its own)."""
        return "(" + " AND ".join(t.sql(column, literal) for t in self.terms) + ")"

    def text(self) -> str:
        return " and ".join(t.text() for t in self.terms)

    def python(self, getter_for: Callable[[str], Callable[[Any], Any]]) -> Callable[[Any], bool]:
        checks = [t.python(getter_for(t.field)) for t in self.terms]
        combined = checks.pop()
        while checks:
            combined = _both(checks.pop(), combined)
        return combined


def _both(first: Callable[[Any], bool], second: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda event: first(event) and second(event)


def parse_predicate(text: str) -> Predicate:
    """Parse ``field op literal [and field op literal ...]``; check fields exist and types agree."""
    tokens = _tokenize(text)
    if not tokens:
        raise ExpressionError("the predicate is empty")
    terms: list[Comparison] = []
    i = 0

    def expect(kinds: set[str], what: str) -> tuple[str, str]:
        nonlocal i
        if i >= len(tokens) or tokens[i][0] not in kinds:
            got = repr(tokens[i][1]) if i < len(tokens) else "the end"
            raise ExpressionError(f"expected {what} but found {got} in {text!r}")
        tok = tokens[i]
        i += 1
        return tok

    def literal(kind_needed: str, field: str) -> str | float:
        negative = False
        if i < len(tokens) and tokens[i] == ("op", "-"):
            negative = True
            expect({"op"}, "-")
        kind, value = expect({"number", "string"}, "a number or a quoted string")
        if kind == "number":
            if kind_needed != "number":
                raise ExpressionError(f"{field} is text; compare it with a quoted string, not {value}")
            number = float(value)
            return -number if negative else number
        if negative or kind_needed != "string":
            raise ExpressionError(f"{field} is a number; compare it with a number, not {value}")
        return _unquote(value)

    while True:
        _, field = expect({"name"}, "a property name")
        kind_needed = "number" if field_kind(field) == "number" else "string"
        if i < len(tokens) and tokens[i] == ("name", "in"):
            i += 1
            expect({"op"}, "(")
            values = [literal(kind_needed, field)]
            while i < len(tokens) and tokens[i] == ("op", ","):
                i += 1
                values.append(literal(kind_needed, field))
            if i >= len(tokens) or tokens[i] != ("op", ")"):
                raise ExpressionError(f"expected ')' to close the list in {text!r}")
            i += 1
            terms.append(Comparison(field, "in", tuple(values)))
        else:
            _, op = expect({"op"}, "a comparison (== != > >= < <= in)")
            if op not in _SQL_OPS:
                raise ExpressionError(f"{op!r} is not a comparison; use == != > >= < <= or in")
            terms.append(Comparison(field, op, (literal(kind_needed, field),)))
        if i == len(tokens):
            break
        kind, word = tokens[i]
        if (kind, word.lower()) != ("name", "and"):
            raise ExpressionError(
                f"expected 'and' but found {word!r} in {text!r} (only 'and' joins comparisons)"
            )
        i += 1
    return Predicate(tuple(terms))


# ---------------------------------------------------------------------------------------------- arithmetic


@dataclass(frozen=True)
class Expr:
    """An arithmetic tree: ``op`` is ``num``, ``ref``, ``neg`` or one of ``+ - * /``."""

    op: str
    args: tuple[Expr, ...] = ()
    value: float = 0.0
    name: str = ""

    def refs(self) -> set[str]:
        if self.op == "ref":
            return {self.name}
        out: set[str] = set()
        for a in self.args:
            out |= a.refs()
        return out

    def text(self) -> str:
        if self.op == "num":
            return repr(self.value)
        if self.op == "ref":
            return self.name
        if self.op == "neg":
            return f"(-{self.args[0].text()})"
        return f"({self.args[0].text()} {self.op} {self.args[1].text()})"

    def sql(self, column: Callable[[str], str], literal: LiteralSpelling = sql_literal) -> str:
        """SQL over DOUBLEs; ``x / 0`` is NULL, and NULL propagates as in Python's evaluation."""
        if self.op == "num":
            return literal(self.value)
        if self.op == "ref":
            return f"CAST({column(self.name)} AS DOUBLE)"
        if self.op == "neg":
            return f"(-{self.args[0].sql(column, literal)})"
        left, right = (a.sql(column, literal) for a in self.args)
        if self.op == "/":
            return f"(CASE WHEN {right} = 0 THEN NULL ELSE {left} / {right} END)"
        return f"({left} {self.op} {right})"

    def evaluate(self, lookup: Callable[[str], Any]) -> float | None:
        if self.op == "num":
            return self.value
        if self.op == "ref":
            v = lookup(self.name)
            return None if v is None else float(v)
        if self.op == "neg":
            x = self.args[0].evaluate(lookup)
            return None if x is None else -x
        a = self.args[0].evaluate(lookup)
        if a is None:
            return None
        b = self.args[1].evaluate(lookup)
        if b is None:
            return None
        if self.op == "+":
            return a + b
        if self.op == "-":
            return a - b
        if self.op == "*":
            return a * b
        return None if b == 0 else a / b


def compile_expression(expr: Expr, position: Callable[[str], int]) -> Callable[[Sequence[Any]], float | None]:
    """A closure computing ``expr`` over a vector (``position`` maps a name to its index); same as
    :meth:`Expr.evaluate`, without walking the tree on every call."""
    if expr.op == "num":
        value = expr.value
        return lambda vec: value
    if expr.op == "ref":
        i = position(expr.name)

        def ref(vec: Sequence[Any]) -> float | None:
            v = vec[i]
            return None if v is None else float(v)

        return ref
    if expr.op == "neg":
        inner = compile_expression(expr.args[0], position)

        def neg(vec: Sequence[Any]) -> float | None:
            x = inner(vec)
            return None if x is None else -x

        return neg
    left = compile_expression(expr.args[0], position)
    right = compile_expression(expr.args[1], position)
    op = expr.op

    def binary(vec: Sequence[Any]) -> float | None:
        a = left(vec)
        if a is None:
            return None
        b = right(vec)
        if b is None:
            return None
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        return None if b == 0 else a / b

    return binary


def parse_expression(text: str) -> Expr:
    """Parse ``+ - * /`` over feature names and numbers, with parentheses and unary minus."""
    tokens = _tokenize(text)
    pos = 0

    def peek() -> tuple[str, str] | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal pos
        if pos >= len(tokens):
            raise ExpressionError(f"{text!r} ends too early")
        pos += 1
        return tokens[pos - 1]

    def expr() -> Expr:
        node = term()
        while (tok := peek()) is not None and tok in (("op", "+"), ("op", "-")):
            take()
            node = Expr(tok[1], (node, term()))
        return node

    def term() -> Expr:
        node = factor()
        while (tok := peek()) is not None and tok in (("op", "*"), ("op", "/")):
            take()
            node = Expr(tok[1], (node, factor()))
        return node

    def factor() -> Expr:
        kind, value = take()
        if kind == "number":
            return Expr("num", value=float(value))
        if kind == "name":
            if "." in value:
                raise ExpressionError(f"{value!r} is not a feature name")
            return Expr("ref", name=value)
        if (kind, value) == ("op", "-"):
            return Expr("neg", (factor(),))
        if (kind, value) == ("op", "("):
            node = expr()
            if take() != ("op", ")"):
                raise ExpressionError(f"expected ')' in {text!r}")
            return node
        raise ExpressionError(f"unexpected {value!r} in {text!r}")

    if not tokens:
        raise ExpressionError("the expression is empty")
    tree = expr()
    if pos != len(tokens):
        raise ExpressionError(f"unexpected {tokens[pos][1]!r} in {text!r}")
    return tree
