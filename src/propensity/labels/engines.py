"""The offline engines behind one small interface: point-in-time features for a spine, labels for an action.

:class:`DuckDBEngine` (the reference) runs the generated SQL on the workspace's DuckDB connection;
:class:`SparkEngine` runs the same plan in Spark SQL over the event log as Spark DataFrames. Training sets,
backfills, the leakage audit and batch scoring take either (``engine: spark`` in propensity.yaml, or
``--engine spark``), and the parity tests hold them to the same answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import duckdb
import pyarrow as pa

from propensity.config.actions import Action
from propensity.config.features import AnyFeature
from propensity.features import FeaturePlan
from propensity.features.offline import compute_features
from propensity.labels.labels import build_labels, build_labels_spark

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


class OfflineEngine(Protocol):
    """What training sets and batch scoring need from an engine."""

    name: str

    def features(self, features: Sequence[AnyFeature] | FeaturePlan, spine: pa.Table) -> pa.Table: ...

    def labels(self, action: Action, cutoffs: Sequence[datetime], **options: Any) -> pa.Table:
        """:func:`propensity.labels.labels.build_labels` (``data_end``, ``until``, ``slide``, ``zone``)."""
        ...


class DuckDBEngine:
    """The reference: DuckDB on one machine, over the connection's ``events`` and ``attributes``."""

    name = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def features(self, features: Sequence[AnyFeature] | FeaturePlan, spine: pa.Table) -> pa.Table:
        return compute_features(self.con, features, spine)

    def labels(self, action: Action, cutoffs: Sequence[datetime], **options: Any) -> pa.Table:
        return build_labels(self.con, action, cutoffs, **options)


class SparkEngine:
    """Spark SQL over the event log's DataFrames (the Parquet store, read by the executors)."""

    name = "spark"

    def __init__(
        self,
        spark: SparkSession,
        events: DataFrame,
        attributes: DataFrame,
        con: duckdb.DuckDBPyConnection | None,
    ) -> None:
        self.spark = spark
        self.events = events
        self.attributes = attributes
        self.con = con

    @classmethod
    def for_workspace(cls, workspace: Any, con: Any = None) -> SparkEngine:
        from propensity.events.spark import log_frames, workspace_session

        spark = workspace_session(workspace)
        events, attributes = log_frames(workspace, spark, con)
        return cls(spark, events, attributes, con)

    def features(self, features: Sequence[AnyFeature] | FeaturePlan, spine: pa.Table) -> pa.Table:
        from propensity.features.spark import compute_features_spark

        return compute_features_spark(
            self.spark, features, spine, events=self.events, attributes=self.attributes
        )

    def labels(self, action: Action, cutoffs: Sequence[datetime], **options: Any) -> pa.Table:
        return build_labels_spark(self.spark, self.events, self.attributes, action, cutoffs, **options)
