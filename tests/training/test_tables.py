"""Labelled tables: `propensity train --table` on a table exported from the synthetic generator.

The export is what a user brings: one row per (customer, cutoff) with the project's features computed at the
cutoff and the oracle's label for buy_7d, the label written as TRUE/FALSE text with a few nulls and a few
unreadable values, integer ids with one repeated. The acceptance: within 0.005 AUC of a plain 5-fold LightGBM
fitted here on the same folds, pooled ECE <= 0.01, and every input row used or reported with its reason.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from propensity.cli.app import app
from propensity.events.log import open_event_log
from propensity.features.offline import compute_features
from propensity.registry.registry import Registry
from propensity.training.encoding import FeatureEncoder
from propensity.training.tables import LabelledTableError, read_labelled
from propensity.workspace import Workspace

RUNNER = CliRunner()


def _export(root: Path) -> tuple[Path, int]:
    """The synthetic generator's labelled table: features at each oracle cutoff, the oracle's buy_7d label."""
    from tests.training.synthetic_project import build_workspace

    ws = build_workspace(root, customers=1500, days=120, seed=3)
    oracle = pq.read_table(root / "data" / "oracle.parquet")
    oracle = oracle.filter(pc.and_(pc.equal(oracle.column("action"), "buy_7d"), oracle.column("eligible")))
    spine = pa.table({"customer_id": oracle.column("customer_id"), "as_of": oracle.column("cutoff")})
    feats = [f for f in ws.spec.features if f.name != "promos_sent_1d"]
    with open_event_log(ws).connection() as con:
        x = compute_features(con, feats, spine)
    n = x.num_rows
    rng = np.random.default_rng(0)
    label = np.where(oracle.column("label").to_numpy(zero_copy_only=False) == 1, "TRUE", "FALSE").astype(
        object
    )
    label[3 + rng.choice(n - 3, 7, replace=False)] = None  # seven rows without a label
    label[:3] = "maybe"  # three unreadable
    ids = np.arange(100_000, 100_000 + n)
    ids[-1] = ids[-2]  # one id repeated
    table = x.drop(["customer_id", "as_of"]).add_column(0, "example_id", pa.array(ids))
    table = table.append_column("bought", pa.array(label.tolist(), pa.string()))
    path = root / "examples.parquet"
    pq.write_table(table, path)
    return path, n


@pytest.mark.slow
def test_train_table_matches_a_plain_kfold_lightgbm(tmp_path: Path) -> None:
    path, n = _export(tmp_path / "syn")
    ws = tmp_path / "shop"
    ws.mkdir()
    out = RUNNER.invoke(app, ["train", "--table", str(path), "--id", "example_id", "--label", "bought", "--json",
                              "-w", str(ws)])  # fmt: skip
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output)
    # every input row is used or reported, with its reason
    assert summary["input_rows"] == n
    assert summary["rejected"]["bought: unreadable label 'maybe'"] == 3
    assert summary["rejected"]["bought: missing label"] == 7
    assert summary["rejected"]["example_id: id repeated (the later row is left out)"] == 1
    assert summary["rows_used"] + sum(summary["rejected"].values()) == n
    assert summary["split"].startswith("stratified 5-fold")
    # the same folds, a plain LightGBM fitted here
    preds = pq.read_table(summary["predictions"])
    table = pq.read_table(path)
    by_id = {str(v): i for i, v in enumerate(table.column("example_id").to_pylist())}
    rows = [by_id[i] for i in preds.column("row_id").to_pylist()]
    feats = [c for c in table.column_names if c not in ("example_id", "bought")]
    x_tab = table.take(pa.array(rows)).select(feats)
    enc = FeatureEncoder.fit(x_tab, feats)
    x = enc.matrix(x_tab)
    y = preds.column("label").to_numpy().astype(int)
    fold = preds.column("fold").to_numpy()
    plain = np.empty(len(y))
    for k in range(5):
        tr, te = fold != k, fold == k
        booster = lgb.train({"objective": "binary", "verbosity": -1, "seed": 0, "num_threads": 1},
                            lgb.Dataset(x[tr], y[tr], categorical_feature=enc.categorical_indices),
                            num_boost_round=100)  # fmt: skip
        plain[te] = booster.predict(x[te])
    auc_plain = roc_auc_score(y, plain)
    auc = summary["model"]["roc_auc"]
    assert auc == pytest.approx(roc_auc_score(y, preds.column("score").to_numpy()), abs=1e-9)
    assert auc >= auc_plain - 0.005, (auc, auc_plain)
    assert summary["model"]["ece"] <= 0.01, summary["model"]
    lo, hi = summary["model"]["ece_ci"]
    assert lo <= summary["model"]["ece"] <= hi
    report = Path(summary["report"]).read_text()
    assert "labelled table" in report and "bought" in report


def test_labels_ids_and_columns_as_public_tables_write_them() -> None:
    t = pa.table(
        {
            "id": [1, 2, 3, 3, None, 6, 7],
            "Churn": ["Yes", "No", "yes", "No", "Yes", " NO ", None],
            "plan": ["a", "b", "a", "b", "a", "b", "a"],
            "member": ["TRUE", "False", "true", "FALSE", "TRUE", None, "TRUE"],
            "spend": ["1.5", "2", "", "4", "5", "6", "7"],
            "signup": pa.array([None] * 7, pa.timestamp("us")),
        }
    )
    lt = read_labelled(t, name="churn", id_column="id", label="Churn")
    assert lt.rejected == {"Churn: missing label": 1, "id: id repeated (the later row is left out)": 1,
                           "id: missing id": 1}  # fmt: skip
    assert lt.accounted and lt.table.num_rows == 4
    assert lt.table.column("label").to_pylist() == [1, 0, 1, 0]
    assert lt.table.column("row_id").to_pylist() == ["1", "2", "3", "6"]
    assert lt.table.schema.field("member").type == pa.bool_()
    assert lt.table.schema.field("spend").type == pa.float64()
    assert lt.feature_names == ["plan", "member", "spend"]
    assert any("signup" in n and "left out" in n for n in lt.notes)
    with pytest.raises(LabelledTableError, match="no column 'Revenue'"):
        read_labelled(t, label="Revenue")
    with pytest.raises(LabelledTableError, match="say which one means 1"):
        read_labelled(pa.table({"y": ["churned", "stayed"], "x": [1, 2]}), label="y")
    lt = read_labelled(pa.table({"y": ["churned", "stayed"], "x": [1, 2]}), label="y", positive="churned")
    assert lt.table.column("label").to_pylist() == [1, 0]


def test_tables_entry_in_the_spec_trains_by_time(tmp_path: Path) -> None:
    """A `tables:` entry with a time column: the split is by time (train, calibration, test in order)."""
    rng = np.random.default_rng(1)
    n = 2000
    x1 = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(2 * x1 - 1)))).astype(int)
    when = pa.array(np.datetime64("2025-01-01T00:00:00", "us") + np.arange(n) * np.timedelta64(1, "h"))
    pq.write_table(pa.table({"x1": x1, "seen": when, "y": y.astype(float)}), tmp_path / "t.parquet")
    (tmp_path / "propensity.yaml").write_text(
        "project: t\ntables:\n  - {name: leads, path: t.parquet, label: y, time: seen}\n"
        "training: {min_positives: 20, min_negatives: 20}\n"
    )
    out = RUNNER.invoke(app, ["train", "--table", "leads", "--json", "-w", str(tmp_path)])
    assert out.exit_code == 0, out.output
    s = json.loads(out.output)
    assert s["split"].startswith("time") and s["rows_used"] == n and s["features"] == ["x1"]
    assert s["model"]["n"] == 400 and s["model"]["roc_auc"] > 0.75
    assert s["bundle"] in {e.id for e in Registry(Workspace.open(tmp_path)).entries()}
    # an ordinary candidate: promoted like any other; scoring without rows says how to score it
    out = RUNNER.invoke(app, ["models", "promote", s["bundle"], "-w", str(tmp_path)])
    assert out.exit_code == 0, out.output
    out = RUNNER.invoke(app, ["score", "-w", str(tmp_path)], env={"COLUMNS": "300"})
    assert out.exit_code != 0 and "labelled table 'leads'" in str(out.exception)
