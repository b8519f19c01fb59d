"""The ``tables`` section of propensity.yaml: labelled tables (one row per example) trained as they are.

>>> t = TableSpec.model_validate({"name": "sessions", "path": "data/sessions.csv", "id": "session_id",
...                              "label": "Revenue"})
>>> t.folds, t.time, t.positive
(5, None, None)
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from propensity.config.base import StrictModel
from propensity.config.warehouse import SqlQuery

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class TableSpec(StrictModel):
    """A labelled table: one row per example, a binary label, typed columns as features (``propensity train
    --table NAME``). No events are invented for it; every row is used or counted with the reason it was not."""

    name: str = Field(description="The table's name; the bundle's action is called so.")
    path: str = Field(default="", description="A Parquet, CSV or JSONL file (relative to propensity.yaml).")
    sql: SqlQuery | None = Field(default=None, description="Or: the rows of a PostgreSQL query.")
    id: str | None = Field(
        default=None, description="The id column (text or integers); row numbers if absent."
    )
    label: str = Field(description="The label column: 1/0, true/false, yes/no, 1.0/0.0 ... or see positive.")
    positive: str | None = Field(
        default=None, description="The label value that means 1, when the label is text with other words."
    )
    time: str | None = Field(
        default=None,
        description="A time column: the split is by time (train, calibration, test in order) instead of "
        "stratified k-fold.",
    )
    features: list[str] | None = Field(
        default=None, description="The columns to learn from (default: every column but id, label and time)."
    )
    exclude: list[str] = Field(default_factory=list, description="Columns never used as features.")
    folds: int = Field(
        default=5, ge=2, le=20, description="k of the stratified k-fold without a time column."
    )

    @model_validator(mode="after")
    def _one_origin(self) -> TableSpec:
        if bool(self.path) == (self.sql is not None):
            raise ValueError("give one of path or sql")
        return self

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"{value!r} is not a valid table name; use lowercase letters, digits and underscores, starting "
                "with a letter"
            )
        return value
