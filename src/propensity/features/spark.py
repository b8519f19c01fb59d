"""The offline feature engine on Spark: the same compiled plan, the same generated SQL, in Spark SQL.

:func:`feature_frame` turns a spine DataFrame (``_rid, customer_id, as_of``) into one row per spine row with
every feature, lazily; :func:`compute_features_spark` is :func:`propensity.features.offline.compute_features`
for Spark (an Arrow spine in, an Arrow table out, same columns, types and order). The query is
:func:`propensity.features._sqlgen.build_query` with the :data:`~propensity.features.dialects.SPARK` dialect:
every join is keyed on ``customer_id``, so Spark partitions the work by customer and each partition is
independent (docs/scale.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from propensity.config.features import AnyFeature
from propensity.features._plan import FeaturePlan
from propensity.features._sqlgen import build_query
from propensity.features.dialects import SPARK

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_COUNTER = itertools.count()


def _plan(features: Sequence[AnyFeature] | FeaturePlan) -> FeaturePlan:
    return features if isinstance(features, FeaturePlan) else FeaturePlan(features)


def feature_query_spark(
    features: Sequence[AnyFeature] | FeaturePlan, spine: str = "spine", *, events: str = "events",
    attributes: str = "attributes",
) -> str:  # fmt: skip
    """The Spark SQL the engine runs (``spine`` needs ``_rid, customer_id, as_of``)."""
    return build_query(
        _plan(features), spine, events_table=events, attributes_table=attributes, dialect=SPARK
    )


def feature_frame(
    spark: SparkSession,
    features: Sequence[AnyFeature] | FeaturePlan,
    spine: DataFrame,
    events: DataFrame,
    attributes: DataFrame,
) -> DataFrame:
    """``_rid`` then one column per feature for each row of ``spine`` (``_rid, customer_id, as_of``); lazy."""
    plan = _plan(features)
    n = next(_COUNTER)
    names = {"spine": f"_pf_spine_{n}", "events": f"_pf_events_{n}", "attributes": f"_pf_attributes_{n}"}
    spine.createOrReplaceTempView(names["spine"])
    events.createOrReplaceTempView(names["events"])
    attributes.createOrReplaceTempView(names["attributes"])
    sql = build_query(
        plan,
        names["spine"],
        events_table=names["events"],
        attributes_table=names["attributes"],
        dialect=SPARK,
    )
    return spark.sql(sql)


def inner_spine(spine: pa.Table) -> tuple[pa.Table, pa.ChunkedArray]:
    missing = [c for c in ("customer_id", "as_of") if c not in spine.column_names]
    if missing:
        raise ValueError(f"the spine needs columns customer_id and as_of; missing: {', '.join(missing)}")
    as_of = spine.column("as_of")
    if not pa.types.is_timestamp(as_of.type):
        raise ValueError(f"spine.as_of must be a timestamp column, got {as_of.type}")
    if as_of.type.tz is None:
        as_of = as_of.cast(pa.timestamp(as_of.type.unit)).cast(pa.timestamp(as_of.type.unit, tz="UTC"))
    as_of = as_of.cast(pa.timestamp("us", tz="UTC"))
    inner = pa.table(
        {
            "_rid": pa.array(range(spine.num_rows), pa.int64()),
            "customer_id": spine.column("customer_id").cast(pa.string()),
            "as_of": as_of,
        }
    )
    return inner, as_of


def frame_to_features(
    plan: FeaturePlan, spine: pa.Table, as_of: pa.ChunkedArray, result: pa.Table
) -> pa.Table:
    """The collected ``_rid, features...`` rows in the spine's order, typed as the plan says, after the spine."""
    result = result.take(pc.sort_indices(result.column("_rid")))
    columns: dict[str, Any] = {}
    for c in spine.column_names:
        columns[c] = as_of if c == "as_of" else spine.column(c)
    for fname, ftype in zip(plan.names, plan.types, strict=True):
        col = result.column(fname)
        columns[fname] = col if col.type == ftype else col.cast(ftype)
    return pa.table(columns)


def compute_features_spark(
    spark: SparkSession,
    features: Sequence[AnyFeature] | FeaturePlan,
    spine: pa.Table,
    *,
    events: DataFrame,
    attributes: DataFrame,
) -> pa.Table:
    """:func:`~propensity.features.offline.compute_features` on Spark: the spine's columns, then every feature.

    ``events`` and ``attributes`` are DataFrames in the log's schema (:mod:`propensity.core.event`), e.g.
    the Parquet event store read by Spark (:meth:`propensity.events.parquet_log.ParquetEventLog.spark_frames`).
    """
    plan = _plan(features)
    clash = sorted(set(spine.column_names) & set(plan.names))
    if clash:
        raise ValueError(f"spine columns clash with feature names: {', '.join(clash)}")
    inner, as_of = inner_spine(spine)
    if not plan.names:
        return spine.set_column(spine.column_names.index("as_of"), "as_of", as_of)
    frame = feature_frame(spark, plan, spark.createDataFrame(inner), events, attributes)
    return frame_to_features(plan, spine, as_of, frame.toArrow())


def feature_function(workspace: Any, con: Any) -> Any:
    """``compute(features, spine) -> table`` on the workspace's engine: DuckDB over ``con``, or Spark (the spec's
    ``engine: spark``, or ``--engine spark``) over the event log read as Spark DataFrames."""
    from propensity.events.spark import engine_of, log_frames, workspace_session
    from propensity.features.offline import compute_features

    if engine_of(workspace) != "spark":
        return lambda features, spine: compute_features(con, features, spine)
    spark = workspace_session(workspace)
    events, attributes = log_frames(workspace, spark, con)
    return lambda features, spine: compute_features_spark(
        spark, features, spine, events=events, attributes=attributes
    )
