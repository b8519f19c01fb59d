"""The ``engine``, ``spark`` and ``storage`` sections of propensity.yaml: where events live, what computes.

>>> StorageSettings.model_validate({"events": "parquet", "path": "s3a://lake/propensity/events"}).events
'parquet'
>>> SparkSettings().master is None
True
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from propensity.config.base import StrictModel

Engine = Literal["duckdb", "spark"]


class StorageSettings(StrictModel):
    # Where the event log (events, attributes, quarantine) lives: "duckdb" (tables in the workspace's DuckDB
    # file; the default) or "parquet" (files partitioned by event date under `path`, committed by manifest, so
    # DuckDB and Spark read the same data). Other state (features, scores, runs) stays in the DuckDB file.
    events: Literal["duckdb", "parquet"] = "duckdb"
    # Parquet only: a folder relative to the workspace, an absolute path, or an object-store URI
    # (s3://..., gs://...; DuckDB reads those through its httpfs extension, Spark through its Hadoop connector).
    path: str = ".propensity/events"


class SparkSettings(StrictModel):
    # The cluster: local[*] (every core of this machine; the default), spark://host:7077 (standalone), yarn,
    # or k8s://https://host:443. PROPENSITY_SPARK_MASTER (or SPARK_MASTER) is used when this is absent.
    master: str | None = None
    # Any Spark setting, e.g. spark.executor.memory: 8g, spark.executor.instances: 20,
    # spark.kubernetes.container.image: registry/propensity:0.1 (the image must hold propensity[spark]).
    conf: dict[str, str | int | float | bool] = Field(default_factory=dict)
