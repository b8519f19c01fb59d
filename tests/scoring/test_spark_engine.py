"""engine: spark end to end on a trained synthetic project: the same training sets row for row, the same batch
scores (features on Spark, the compiled scorer inside mapInArrow), on the DuckDB log and on the Parquet store;
and the example project's full feature set computed by both engines."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
import yaml
from tests.training import synthetic_project

from propensity.datasets.examples import example_spec_text
from propensity.events.log import open_event_log
from propensity.events.parquet_log import ParquetEventLog, export_to_parquet
from propensity.events.spark import log_frames
from propensity.features import compute_features, parse_features
from propensity.features.spark import compute_features_spark
from propensity.scoring.batch import score_batch
from propensity.training.dataset import build_training_sets
from propensity.workspace import Workspace

pytestmark = pytest.mark.slow
RUN_COLUMNS = ("scoring_run_id", "scored_at", "expiration_at")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    return synthetic_project.trained_workspace(
        tmp_path_factory.mktemp("spark-engine"), customers=250, days=100, seed=5,
        spec={"actions": [{"template": "buy"}, {"template": "churn"}, {"template": "respond"}]},
    )  # fmt: skip


def with_engine(ws: Workspace, engine: str, **spec: Any) -> Workspace:
    return dataclasses.replace(ws, spec=ws.spec.model_copy(update={"engine": engine, **spec}))


def test_training_sets_are_the_same_row_for_row(trained: Workspace, spark: Any) -> None:
    skipped: dict[str, str] = {}
    duck = build_training_sets(with_engine(trained, "duckdb"), errors=skipped)
    other = build_training_sets(with_engine(trained, "spark"), errors={})
    assert (
        duck.id == other.id
        and set(duck.sets) == set(other.sets)
        and {"buy_7d", "respond_7d"} <= set(duck.sets)
    )
    for name, ts in duck.sets.items():
        assert ts.table.num_rows > 0
        assert ts.table.equals(other.sets[name].table), name


def _comparable(rows: pa.Table) -> pa.Table:
    rows = rows.drop_columns(list(RUN_COLUMNS))
    return rows.take(pc.sort_indices(rows, [("action", "ascending"), ("customer_id", "ascending")]))


def test_batch_scores_are_the_same_on_spark_and_on_the_parquet_store(trained: Workspace, spark: Any) -> None:
    as_of = datetime(2024, 3, 20, tzinfo=UTC)
    duck = score_batch(with_engine(trained, "duckdb"), as_of=as_of)
    other = score_batch(with_engine(trained, "spark"), as_of=as_of)
    assert duck.rows.num_rows == other.rows.num_rows > 0
    assert _comparable(duck.rows).equals(_comparable(other.rows))
    # The same log as Parquet files, read by Spark's executors.
    lake = ParquetEventLog(trained.root / "lake", trained.db_path)
    if not lake.manifest().version:
        export_to_parquet(trained.db_path, lake)
    on_lake = with_engine(trained, "spark", storage=trained.spec.storage.model_copy(
        update={"events": "parquet", "path": str(trained.root / "lake")}))  # fmt: skip
    assert isinstance(open_event_log(on_lake), ParquetEventLog)
    lake_run = score_batch(on_lake, as_of=as_of)
    assert _comparable(lake_run.rows).equals(_comparable(duck.rows))


def test_the_example_projects_full_feature_set_on_both_engines(trained: Workspace, spark: Any) -> None:
    spec = yaml.safe_load(example_spec_text("synthetic"))
    features = parse_features(spec["features"])
    assert len(features) >= 80
    with open_event_log(trained).connection(read_only=True) as con:
        ids = [
            r[0]
            for r in con.execute("SELECT DISTINCT customer_id FROM events ORDER BY 1 LIMIT 120").fetchall()
        ]
        times = [datetime(2024, 2, 1, tzinfo=UTC) + timedelta(days=9 * k, hours=7 * k) for k in range(6)]
        spine = pa.table({
            "customer_id": [c for t in times for c in ids],
            "as_of": pa.array([t for t in times for _ in ids], pa.timestamp("us", tz="UTC")),
        })  # fmt: skip
        duck = compute_features(con, features, spine)
    events, attributes = log_frames(trained, spark)
    other = compute_features_spark(spark, features, spine, events=events, attributes=attributes)
    assert duck.schema == other.schema
    from tests.features.feature_helpers import same

    for name in [f.name for f in features]:
        for r, (a, b) in enumerate(
            zip(duck.column(name).to_pylist(), other.column(name).to_pylist(), strict=True)
        ):
            assert same(a, b), f"{name} row {r}: duckdb {a!r}, spark {b!r}"
