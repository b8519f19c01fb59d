"""The ``scoring`` section of propensity.yaml: where batch scores are stored, how long they are valid.

>>> ScoringSettings.model_validate({"store": "parquet", "path": "scores", "ttl": "12h"}).ttl
Duration('12h')
>>> ScoringSettings().store
'duckdb'
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from propensity.config.base import StrictModel
from propensity.config.durations import Duration, FiniteDuration


class ScoringSettings(StrictModel):
    # Where runs go: "duckdb" (tables `scores` and `scoring_runs` in the workspace's DuckDB file), "postgres"
    # (the server at `url`) or "parquet" (a folder: one file per run plus a JSON manifest per run).
    store: Literal["duckdb", "postgres", "parquet"] = "duckdb"
    # PostgreSQL only: a libpq URL such as postgresql://user@host:5432/db (a password is better kept in
    # PGPASSWORD or ~/.pgpass than in this file).
    url: str | None = None
    # PostgreSQL only: the schema holding the two tables (created when missing).
    schema_name: str = Field(default="propensity", alias="schema", pattern=r"^[a-z_][a-z0-9_]*$")
    # Parquet only: the folder, relative to the workspace.
    path: str = ".propensity/scores"
    # How long a batch score is valid: every row's expiration_at is its scored_at plus this. Expired rows are
    # never exported.
    ttl: FiniteDuration = Field(default_factory=lambda: Duration.parse("1d"))
    # Reason codes per row (the features that moved the score most); 0 leaves the column null.
    reason_codes: int = Field(default=3, ge=0, le=10)
    # Which rows get them: "activated" (the row of each customer's next best action: what destinations send)
    # or "eligible" (every scored row; several times slower on large runs).
    reason_codes_for: Literal["activated", "eligible"] = "activated"
    # Customers scored per pass (bounds memory on large runs).
    batch_size: int = Field(default=250_000, ge=1_000)

    @model_validator(mode="after")
    def _url_for_postgres(self) -> ScoringSettings:
        if self.store == "postgres" and not self.url:
            raise ValueError("store 'postgres' needs url: e.g. url: postgresql://scores@db.internal:5432/crm")
        if self.ttl.seconds <= 0:
            raise ValueError("ttl must be longer than 0s, e.g. ttl: 1d")
        return self
