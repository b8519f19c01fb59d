"""SQL dialects: the few spellings in which the engines running the generated SQL differ.

The feature plan (:mod:`propensity.features._sqlgen`), labels and eligibility (:mod:`propensity.labels.labels`)
are written once, as SQL; what DuckDB and Spark SQL spell differently goes through a :class:`Dialect`.
:data:`DUCKDB` is the reference; :data:`SPARK` is Spark SQL 4.x with ``spark.sql.ansi.enabled=false``
(division by zero gives NULL, as in DuckDB's generated expressions) and its default string-literal parser
(backslash escapes).

>>> DUCKDB.literal("it's"), SPARK.literal("it's")
("'it''s'", "'it\\\\'s'")
>>> SPARK.arg_max("v", SPARK.row("a", "b"))
'max_by(v, struct(a, b))'
"""

from __future__ import annotations

from dataclasses import dataclass

from propensity.config.predicates import sql_literal


@dataclass(frozen=True)
class Dialect:
    """DuckDB spellings (the reference engine)."""

    name: str = "duckdb"

    def literal(self, value: str | float) -> str:
        """A constant read back as exactly this Python value (text, or a float as DOUBLE)."""
        return sql_literal(value)

    def quote(self, name: str) -> str:
        """A quoted identifier (a feature name as an output column)."""
        return '"' + name.replace('"', '""') + '"'

    def epoch_us(self, expr: str) -> str:
        """Microseconds since the epoch of a UTC timestamp."""
        return f"epoch_us({expr})"

    def timestamp_of_us(self, expr: str) -> str:
        """The UTC timestamp of an integer count of microseconds since the epoch."""
        return f"CAST(make_timestamp({expr}) AS TIMESTAMPTZ)"

    def json_text(self, column: str, key: str) -> str:
        return f"json_extract_string({column}, '$.{key}')"

    def row(self, *exprs: str) -> str:
        """An ordered tuple of values (a sort key compared field by field)."""
        return "(" + ", ".join(exprs) + ")"

    def struct_v(self, expr: str) -> str:
        """A one-field struct ``{v: expr}``, so that an aggregate can choose a row whose value is NULL."""
        return f"struct_pack(v := {expr})"

    def arg_max(self, value: str, key: str) -> str:
        return f"arg_max({value}, {key})"

    def full_match(self, expr: str, pattern: str) -> str:
        return f"regexp_full_match({expr}, {self.literal(pattern)})"

    def timestamp_us(self, text: str, with_zone: bool) -> str:
        """Microseconds of an ISO 8601 text (``Z`` or ``±HH:MM`` when ``with_zone``), NULL when unparseable."""
        kind = "TIMESTAMPTZ" if with_zone else "TIMESTAMP"
        return f"epoch_us(TRY_CAST(replace({text}, 'Z', '+00:00') AS {kind}))"

    def int_range(self, lo: str, hi: str) -> str:
        """Rows ``lo, lo + 1, ..., hi - 1`` (none when ``hi <= lo``), as a set-returning select expression."""
        return f"unnest(range({lo}, {hi}))"

    def to_double(self, expr: str) -> str:
        return f"CAST({expr} AS DOUBLE)"

    def wall_clock_us(self, text: str, zone: str, *, next_day: bool = False) -> str:
        """Microseconds of a wall-clock time in ``zone`` held as text; with ``next_day``, the text is a date and
        the result is the midnight that ends it (in ``zone``, so a DST day has 23 or 25 hours). NULL when
        unparseable."""
        z = self.literal(zone)
        wall = (
            f"CAST(TRY_CAST({text} AS DATE) + INTERVAL 1 DAY AS TIMESTAMP)"
            if next_day
            else f"TRY_CAST({text} AS TIMESTAMP)"
        )
        return f"epoch_us(timezone({z}, {wall}))"

    def local_date(self, expr: str, zone: str) -> str:
        """The calendar date ('YYYY-MM-DD' text) in the IANA ``zone`` of a UTC timestamp."""
        return f"strftime(timezone({self.literal(zone)}, {expr}), '%Y-%m-%d')"

    @property
    def semi_join(self) -> str:
        return "SEMI JOIN"

    @property
    def sorts_output(self) -> bool:
        """Whether the feature query ends with ``ORDER BY _rid`` (Spark sorts on the driver instead)."""
        return True


@dataclass(frozen=True)
class SparkDialect(Dialect):
    """Spark SQL spellings (``spark.sql.ansi.enabled=false``, session time zone UTC)."""

    name: str = "spark"

    def literal(self, value: str | float) -> str:
        if isinstance(value, float):
            return sql_literal(value)
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

    def quote(self, name: str) -> str:
        return "`" + name.replace("`", "``") + "`"

    def epoch_us(self, expr: str) -> str:
        return f"unix_micros({expr})"

    def timestamp_of_us(self, expr: str) -> str:
        return f"timestamp_micros({expr})"

    def json_text(self, column: str, key: str) -> str:
        return f"get_json_object({column}, '$.{key}')"

    def row(self, *exprs: str) -> str:
        return "struct(" + ", ".join(exprs) + ")"

    def struct_v(self, expr: str) -> str:
        return f"named_struct('v', {expr})"

    def arg_max(self, value: str, key: str) -> str:
        return f"max_by({value}, {key})"

    def full_match(self, expr: str, pattern: str) -> str:
        # Java's `$` also matches before a final line break; `\z` is the end of input, as RE2's full match.
        java = pattern[:-1] + "\\z" if pattern.endswith("$") else pattern
        return f"({expr} RLIKE {self.literal(java)})"

    def timestamp_us(self, text: str, with_zone: bool) -> str:
        # Without a zone the session time zone (UTC) applies, as DuckDB's TIMESTAMP (epoch_us reads it as UTC).
        return f"unix_micros(try_cast(replace({text}, 'Z', '+00:00') AS TIMESTAMP))"

    def local_date(self, expr: str, zone: str) -> str:
        return f"date_format(from_utc_timestamp({expr}, {self.literal(zone)}), 'yyyy-MM-dd')"

    def wall_clock_us(self, text: str, zone: str, *, next_day: bool = False) -> str:
        wall = (
            f"CAST(date_add(try_cast({text} AS DATE), 1) AS TIMESTAMP)"
            if next_day
            else f"try_cast({text} AS TIMESTAMP)"
        )
        return f"unix_micros(to_utc_timestamp({wall}, {self.literal(zone)}))"

    def int_range(self, lo: str, hi: str) -> str:
        # sequence(a, b) counts down when b < a: an empty range must be spelled out.
        return f"explode(CASE WHEN ({hi}) > ({lo}) THEN sequence({lo}, ({hi}) - 1) ELSE array() END)"

    @property
    def semi_join(self) -> str:
        return "LEFT SEMI JOIN"

    @property
    def sorts_output(self) -> bool:
        return False


DUCKDB = Dialect()
SPARK = SparkDialect()
