"""Batch scoring on Spark: point-in-time features and the compiled scorer inside ``mapInArrow``.

The features are the plan in Spark SQL (:mod:`propensity.features.spark`), partitioned by customer; each
partition's Arrow batches go through :func:`score_arrow_batches`, which loads the bundle once per Python worker
(one scorer per executor process, cached by bundle folder) and scores a whole batch with
:meth:`~propensity.scoring.model.ServingModel.probabilities_many`: no Python per row. The driver gets back the
features and one probability column per model action, and batch scoring goes on exactly as on DuckDB
(eligibility, percentiles, segments, decisions, reason codes, the score store), so the run is the same.

What executors need: the ``propensity[spark]`` package (same version as the driver) and read access to the
bundle folder (a shared path, or ship it with ``spark.files``); see docs/scale.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

_MODELS: dict[str, Any] = {}


def _model(bundle_dir: str) -> Any:
    """The bundle's model, loaded once per Python worker process (a ``ServingModel``)."""
    model = _MODELS.get(bundle_dir)
    if model is None:
        from propensity.scoring.model import ServingModel

        model = _MODELS[bundle_dir] = ServingModel.from_bundle_dir(Path(bundle_dir))
    return model


def prob_column(i: int) -> str:
    return f"_p{i}"


def score_arrow_batches(bundle_dir: str, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Each batch of feature rows with one probability column per model action appended (``_p0, _p1, ...``):
    :func:`~propensity.scoring.scores.score_record_batch`, the scoring stage of every engine."""
    from propensity.scoring.scores import score_record_batch

    model = _model(bundle_dir)
    for batch in batches:
        probs = score_record_batch(model, batch)
        yield pa.RecordBatch.from_arrays(
            [*batch.columns, *probs.columns],
            names=[*batch.schema.names, *(prob_column(i) for i in range(probs.num_columns))],
        )


def spark_features_and_scores(
    workspace: Any,
    bundle_dir: Path,
    model: Any,
    features: Sequence[Any],
    spine: pa.Table,
    con: Any = None,
) -> tuple[pa.Table, np.ndarray]:
    """Features (the spine's columns then every feature, in spine order) and the model's probabilities
    (rows × model actions) for ``spine``, computed on the workspace's Spark session."""
    from pyspark.sql.types import DoubleType, StructField, StructType

    from propensity.events.spark import log_frames, workspace_session
    from propensity.features import FeaturePlan
    from propensity.features.spark import feature_frame, frame_to_features, inner_spine

    spark = workspace_session(workspace)
    events, attributes = log_frames(workspace, spark, con)
    plan = FeaturePlan(list(features))
    inner, as_of = inner_spine(spine)
    frame = feature_frame(spark, plan, spark.createDataFrame(inner), events, attributes)
    schema = StructType(
        [
            *frame.schema.fields,
            *(StructField(prob_column(i), DoubleType()) for i in range(len(model.action_names))),
        ]
    )
    path = str(bundle_dir)
    scored = frame.mapInArrow(lambda it: score_arrow_batches(path, it), schema).toArrow()
    out = frame_to_features(
        plan, spine, as_of, scored.drop_columns([prob_column(i) for i in range(len(model.action_names))])
    )
    order = scored.column("_rid").to_numpy().argsort(kind="stable")
    probs = (
        np.column_stack(
            [scored.column(prob_column(i)).to_numpy()[order] for i in range(len(model.action_names))]
        )
        if model.action_names
        else np.zeros((spine.num_rows, 0))
    )
    return out, probs
