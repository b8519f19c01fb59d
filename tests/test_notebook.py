"""The notebook facade (``import propensity as pp``) and the frames it accepts: pandas, Polars, Arrow.

The facade's own docstring examples run here too (doctests), with those of the modules that read users' tables.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import propensity as pp
from propensity.core.frames import FrameError, to_arrow
from propensity.events.ingest import ingest_table
from propensity.events.log import open_event_log
from propensity.features.offline import compute_features
from propensity.workspace import Workspace

DOCTESTED = [
    "propensity.notebook",
    "propensity.core.frames",
    "propensity.core.values",
    "propensity.events.tables",
    "propensity.experiments.imported",
    "propensity.training.tables",
    "propensity.config.tables",
    "propensity.experiments.uplift",
]


@pytest.mark.parametrize("module", DOCTESTED)
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result


def _events() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c2", "c3"],
            "event_type": ["page_view", "purchase", "page_view", "page_view"],
            "event_time": pd.to_datetime(
                ["2026-01-02 10:00", "2026-01-02 10:05", "2026-01-03 09:00", "2026-01-04 09:00"], utc=True
            ),
            "amount": [None, 12.5, None, None],
        }
    )


def _spine() -> pd.DataFrame:
    return pd.DataFrame(
        {"customer_id": ["c1", "c2", "c3", "c4"], "as_of": pd.to_datetime(["2026-01-05"] * 4)}
    )


@pytest.mark.parametrize("kind", ["pandas", "polars"])
def test_ingest_table_and_compute_features_take_frames(tmp_path: Path, kind: str) -> None:
    """The reported crash: ``compute_features`` / ``ingest_table`` on a pandas DataFrame (no ``column_names``);
    Polars frames hand strings over as string_view, which the stages must read as well."""
    project = pp.create(tmp_path, example="synthetic")
    events = _events() if kind == "pandas" else pl.from_pandas(_events())
    report = ingest_table(project.workspace, events)
    assert (report.accepted, report.quarantined) == (4, 0)
    spine = _spine() if kind == "pandas" else pl.from_pandas(_spine())
    feats = [f for f in project.workspace.spec.features if f.name in ("page_views_30d", "purchases_lifetime")]
    with open_event_log(project.workspace).connection() as con:
        table = compute_features(con, feats, spine)
    assert isinstance(table, pa.Table)
    assert table.column("page_views_30d").to_pylist() == [1, 1, 1, 0]
    assert table.column("purchases_lifetime").to_pylist() == [1, 0, 0, 0]


@pytest.mark.parametrize("kind", ["pandas", "polars", "arrow"])
def test_facade_returns_the_kind_it_was_given(tmp_path: Path, kind: str) -> None:
    project = pp.create(tmp_path, example="synthetic")
    convert = {"pandas": lambda f: f, "polars": pl.from_pandas, "arrow": pa.Table.from_pandas}[kind]
    assert project.ingest(convert(_events())).accepted == 4
    assert project.ingest(convert(_events())).accepted == 0  # idempotent: the same events are duplicates
    spine = convert(_spine())
    out = project.features(spine, names=["page_views_30d", "spend_30d"])
    expected_type = {"pandas": pd.DataFrame, "polars": pl.DataFrame, "arrow": pa.Table}[kind]
    assert isinstance(out, expected_type)
    back = to_arrow(out)
    assert back.column_names == ["customer_id", "as_of", "page_views_30d", "spend_30d"]
    assert back.column("customer_id").to_pylist() == ["c1", "c2", "c3", "c4"]
    assert back.column("page_views_30d").to_pylist() == [1, 1, 1, 0]
    assert back.column("spend_30d").to_pylist()[0] == pytest.approx(12.5)
    assert isinstance(project.features(spine, like="polars"), pl.DataFrame)
    assert project.events(["c1"], like="pandas")["event_type"].tolist() == ["page_view", "purchase"]
    with pytest.raises(Exception, match="no feature named 'nope'"):
        project.features(spine, names=["nope"])


def test_frames_name_what_they_cannot_read() -> None:
    with pytest.raises(FrameError, match=r"spine: a builtins\.list is not a table"):
        to_arrow([1, 2], what="spine")
    # a pandas frame with an unnamed integer index and non-text column names
    t = to_arrow(pd.DataFrame({0: [1, 2], "b": ["x", None]}, index=[5, 6]))
    assert t.column_names == ["0", "b"] and t.num_rows == 2


@pytest.mark.slow
def test_facade_trains_promotes_scores_and_predicts(tmp_path: Path) -> None:
    """The README's ten lines: open, ingest, train, promote, score (as pandas), predict, report."""
    from tests.training.synthetic_project import build_workspace

    build_workspace(tmp_path, customers=400, days=120)
    project = pp.open(tmp_path)
    assert isinstance(project.workspace, Workspace)
    trained = project.train(["buy_7d"])
    assert trained.bundle_id and project.production() is None
    assert project.promote(trained.bundle_id) == trained.bundle_id
    end = project.events(like="arrow").column("event_time").to_pylist()
    as_of = max(end)
    scores = project.score(as_of=as_of, like="pandas")
    assert isinstance(scores, pd.DataFrame) and len(scores) > 0
    assert scores["score"].dropna().between(0, 1).all() and scores["score"].notna().any()
    one = project.predict(str(scores["customer_id"].iloc[0]), as_of=as_of)
    assert one and one[0]["action"] == "buy_7d"
    assert project.report()["_meta"]["bundle"] == trained.bundle_id


def test_facade_trains_a_labelled_pandas_table(tmp_path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(2)
    n = 1200
    x = rng.normal(size=n)
    frame = pd.DataFrame({"sid": np.arange(n), "x": x, "city": rng.choice(["Oslo", "Rome"], size=n),
                          "Revenue": np.where(rng.random(n) < 1 / (1 + np.exp(-2 * x)), "TRUE", "FALSE")})  # fmt: skip
    frame.loc[5, "Revenue"] = None
    project = pp.create(tmp_path / "shop")
    result = project.train_table(frame, label="Revenue", id="sid", folds=3)
    s = result.summary()
    assert s["rows_used"] == n - 1 and s["rejected"] == {"Revenue: missing label": 1}
    assert s["features"] == ["x", "city"] and s["model"]["roc_auc"] > 0.75
    assert project.report(s["bundle"])["_meta"]["bundle"] == s["bundle"]
