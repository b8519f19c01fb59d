"""Experiments run elsewhere: imported, validated, and reported arm by arm against the control.

The acceptance test builds a three-arm experiment with a binary and a continuous outcome, writes it the way public
data sets do (Yes/No text, a few broken rows), imports it through the CLI, and checks the report's differences and
intervals against numbers computed here, independently of the package's code.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from typer.testing import CliRunner

from propensity.cli.app import app
from propensity.core.frames import to_arrow
from propensity.experiments.imported import (
    ExperimentImportError,
    experiment_summary,
    import_experiment,
    load_imported,
)
from propensity.workspace import Workspace

Z = 1.959963984540054
RUNNER = CliRunner()


def _experiment(n: int = 6000, seed: int = 3) -> pa.Table:
    rng = np.random.default_rng(seed)
    arm = rng.choice(["No E-Mail", "Mens E-Mail", "Womens E-Mail"], size=n)
    channel = rng.choice(["Web", "Phone"], size=n)
    history = rng.gamma(2.0, 100.0, size=n)
    base = 0.08 + 0.04 * (channel == "Web")
    p = base + np.where(arm == "Mens E-Mail", 0.05, 0.0) + np.where(arm == "Womens E-Mail", 0.02, 0.0)
    converted = rng.random(n) < p
    spend = np.where(converted, rng.gamma(2.0, 20.0, size=n) + 10.0 * (arm != "No E-Mail"), 0.0)
    return pa.table(
        {
            "customer": pa.array(np.arange(1000, 1000 + n)),  # integer ids
            "segment": pa.array(arm.tolist()),
            "channel": pa.array(channel.tolist()),
            "history": pa.array(history),
            "converted": pa.array(["Yes" if c else "No" for c in converted]),
            "spend": pa.array(np.round(spend, 2)),
        }
    )


def _newcombe(x_t: int, n_t: int, x_c: int, n_c: int) -> tuple[float, float]:
    def wilson(x: int, n: int) -> tuple[float, float]:
        p = x / n
        centre = p + Z * Z / (2 * n)
        half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n))
        return (centre - half) / (1 + Z * Z / n), (centre + half) / (1 + Z * Z / n)

    (lt, ut), (lc, uc) = wilson(x_t, n_t), wilson(x_c, n_c)
    pt, pc_ = x_t / n_t, x_c / n_c
    d = pt - pc_
    return d - math.sqrt((pt - lt) ** 2 + (uc - pc_) ** 2), d + math.sqrt((ut - pt) ** 2 + (pc_ - lc) ** 2)


def test_three_arms_reproduce_independent_differences_and_intervals(tmp_path: Path) -> None:
    """Acceptance: a three-arm experiment; binary (Newcombe, and Wald) and continuous (Wald) intervals."""
    table = _experiment()
    path = tmp_path / "hillstrom.csv"
    pacsv.write_csv(table, path)
    # Two broken rows the way real exports have them: a missing arm, and a null outcome.
    with path.open("a") as f:
        f.write("99998,,Web,10.0,Yes,5.0\n99999,Mens E-Mail,Web,10.0,,0.0\n")
    ws = tmp_path / "ws"
    ws.mkdir()
    result = RUNNER.invoke(app, ["experiments", "import", str(path), "--arm", "segment", "--id", "customer",
                                 "--outcome", "converted", "--outcome", "spend:continuous", "--segment", "channel",
                                 "--no-covariates", "--json", "-w", str(ws)])  # fmt: skip
    assert result.exit_code == 0, result.output
    imported = json.loads(result.output)
    assert imported["control"] == "No E-Mail"  # guessed from its name
    assert imported["rejected"] == {"arm: missing": 1, "converted: missing value (left out of converted)": 1}
    assert imported["rows"] == table.num_rows + 1  # every input row is used or counted

    report = RUNNER.invoke(
        app, ["experiments", "report", "--experiment", "hillstrom", "--json", "-w", str(ws)]
    )
    assert report.exit_code == 0, report.output
    data = json.loads(report.output)
    arm = np.asarray(table.column("segment").to_pylist())
    conv = np.asarray([v == "Yes" for v in table.column("converted").to_pylist()], dtype=float)
    spend = table.column("spend").to_numpy()
    # The row with a null `converted` still counts for spend (an outcome is left out only where it is missing).
    spend_arm, spend = np.append(arm, "Mens E-Mail"), np.append(spend, 0.0)
    for treatment in ("Mens E-Mail", "Womens E-Mail"):
        t, c = arm == treatment, arm == "No E-Mail"
        # binary: rates, the difference, Newcombe's interval and the Wald interval
        got = data["outcomes"]["converted"]["arms"][treatment]["comparison"]["(all)"]
        x_t, n_t = int(conv[t].sum()), int(t.sum())
        x_c, n_c = int(conv[c].sum()), int(c.sum())
        assert got["n_control"] == n_c and got["n_treated"] == n_t
        assert got["absolute"] == pytest.approx(x_t / n_t - x_c / n_c, abs=1e-12)
        assert got["absolute_ci"] == pytest.approx(_newcombe(x_t, n_t, x_c, n_c), abs=1e-12)
        pt, pc_ = x_t / n_t, x_c / n_c
        se = math.sqrt(pt * (1 - pt) / n_t + pc_ * (1 - pc_) / n_c)
        assert got["absolute_ci_wald"] == pytest.approx([pt - pc_ - Z * se, pt - pc_ + Z * se], abs=1e-12)
        # continuous: the difference in means and its Wald interval (unequal variances)
        got = data["outcomes"]["spend"]["arms"][treatment]["comparison"]["(all)"]
        t, c = spend_arm == treatment, spend_arm == "No E-Mail"
        d = spend[t].mean() - spend[c].mean()
        se = math.sqrt(spend[t].var(ddof=1) / t.sum() + spend[c].var(ddof=1) / c.sum())
        assert got["difference"] == pytest.approx(d, rel=1e-9)
        assert got["difference_ci"] == pytest.approx([d - Z * se, d + Z * se], rel=1e-9)
        # per segment
        web = np.append(np.asarray(table.column("channel").to_pylist()), "Web") == "Web"
        got = data["outcomes"]["spend"]["arms"][treatment]["comparison"]["channel=Web"]
        assert got["difference"] == pytest.approx(spend[t & web].mean() - spend[c & web].mean(), rel=1e-9)
    # The planted effects: the men's e-mail (+5 points) shows more lift than the women's (+2).
    lifts = {
        a: data["outcomes"]["converted"]["arms"][a]["comparison"]["(all)"]["absolute"]
        for a in ("Mens E-Mail", "Womens E-Mail")
    }
    assert lifts["Mens E-Mail"] > lifts["Womens E-Mail"]
    html = (ws / ".propensity" / "reports" / "experiment-hillstrom.html").read_text()
    assert "Womens E-Mail" in html and "95% CI" in html


def test_separate_outcomes_table_ids_and_rejections(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path)
    assignments = pa.table({"id": [1, 2, 3, 4, 4, 5, None, 6, 6],
                            "arm": ["c", "t", "c", "t", "t", "c", "t", "c", "t"],
                            "assigned_at": ["2024-01-01", "2024-01-02", "nonsense", "2024-01-01", "2024-01-01",
                                            "2024-01-03", "2024-01-01", "2024-01-01", "2024-01-01"]})  # fmt: skip
    outcomes = pa.table({"id": ["1", "2", "4", "4", "9"], "bought": [1.0, 0.0, 1.0, 1.0, 1.0]})
    r = import_experiment(ws, assignments, outcomes, name="e1", assigned_at="assigned_at", control="c",
                          outcome_columns=["bought"], covariates=[])  # fmt: skip
    assert r.rejected == {
        "assigned_at: missing or unreadable time": 1,
        "id: assigned to two arms (all its rows rejected)": 2,
        "id: assigned twice (later row dropped)": 1,
        "id: missing": 1,
        "outcome rows: repeated for one id (the id is left out)": 2,
    }
    _meta, rows = load_imported(ws, "e1")
    assert rows.column("id").to_pylist() == ["1", "2", "5"]
    assert rows.column("bought").to_pylist() == [1.0, 0.0, 0.0]  # 5 has no outcome row: 0 (and a note)
    assert any("no outcome row" in n for n in r.notes)
    with pytest.raises(ExperimentImportError, match="--control 'x' is not an arm"):
        import_experiment(ws, assignments, outcomes, name="e2", control="x", outcome_columns=["bought"])


def test_facade_frames_and_uplift_per_arm(tmp_path: Path) -> None:
    """Frames from pandas import directly; each treatment arm gets its own uplift model and verdict."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(5)
    n = 3000
    x1 = rng.normal(size=n)
    arm = rng.choice(["control", "a", "b"], size=n)
    effect = np.where((arm == "a") & (x1 > 0), 0.25, 0.0)  # arm a persuades half the customers
    y = (rng.random(n) < 0.1 + effect).astype(int)
    frame = pd.DataFrame({"id": np.arange(n), "arm": arm, "x1": x1, "x2": rng.normal(size=n), "y": y})
    ws = Workspace.open(tmp_path)
    import_experiment(ws, frame, name="up", outcome_columns=["y"])
    meta, rows = load_imported(ws, "up")
    summary = experiment_summary(meta, rows, permutations=200)
    ua = summary["outcomes"]["y"]["arms"]["a"]["uplift"]
    ub = summary["outcomes"]["y"]["arms"]["b"]["uplift"]
    assert ua["beats_random"] and ua["qini_coefficient"] > 0.1, ua
    assert ua["verdict"].startswith("beats random")
    assert set(ua["uplift_at_k"]) == {"0.1", "0.2", "0.3"}
    assert ub["verdict"].startswith("indistinguishable from random"), ub
    assert to_arrow(frame).num_rows == n
