"""A warehouse query as a source (``sql:`` in a source, an attribute source or a table of propensity.yaml).

>>> q = SqlQuery.model_validate({"url_env": "SHOP_PG_URL", "query": "SELECT * FROM orders",
...                              "watermark": "updated_at"})
>>> q.url_env, q.watermark
('SHOP_PG_URL', 'updated_at')
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from propensity.config.base import StrictModel

_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SqlQuery(StrictModel):
    """Rows read from PostgreSQL by a declared query. The connection URL is read only from the environment
    variable ``url_env`` (never written in the spec, never logged). With ``watermark`` each load reads only rows
    whose watermark is at or after the last load's largest (the repeated boundary rows are dropped by dedupe)."""

    url_env: str = Field(description="The environment variable holding the postgresql:// URL.")
    query: str = Field(description="A SELECT; wrapped as a subquery, so it may join, filter and rename.")
    watermark: str | None = Field(
        default=None, description="A column of the query (a time or a number) for incremental loads."
    )

    @field_validator("url_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not _ENV.match(value):
            raise ValueError(
                f"{value!r} is not an environment variable name (put the URL in the environment)"
            )
        return value

    @field_validator("watermark")
    @classmethod
    def _column(cls, value: str | None) -> str | None:
        if value is not None and not _COLUMN.match(value):
            raise ValueError(f"{value!r} is not a plain column name")
        return value

    @field_validator("query")
    @classmethod
    def _select(cls, value: str) -> str:
        v = value.strip().rstrip(";").strip()
        if not re.match(r"^(select|with)\b", v, re.IGNORECASE):
            raise ValueError("the query must be a SELECT (or WITH ... SELECT)")
        return v
