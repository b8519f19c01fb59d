"""Campaign response on real data, end to end through the example project: Complete Journey (a subset of
households), respond_campaign trained on sends until the campaign's end date, a campaign's sends in one split,
then every send of campaigns 16-19 scored at its own send time by `propensity score --triggers --out`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from propensity.cli.app import app
from propensity.core.contract import validate_rows
from propensity.events.ingest import ingest_attributes, ingest_files
from propensity.registry.registry import Registry
from propensity.registry.train import train_project
from propensity.training.dataset import load_training_set
from propensity.workspace import Workspace

PROJECT = Path(__file__).resolve().parents[2] / "src/propensity/datasets/projects/completejourney.yaml"
NY = ZoneInfo("America/New_York")


@pytest.fixture(scope="module")
def cj(tmp_path_factory: pytest.TempPathFactory, cj_export: tuple[Any, Path, Any]) -> tuple[Workspace, Path]:
    full = cj_export[1]  # the session's export (tests/conftest.py)
    root = tmp_path_factory.mktemp("cj_respond")
    spec = yaml.safe_load(PROJECT.read_text())
    spec["actions"] = [a for a in spec["actions"] if a.get("name") == "respond_campaign"]
    spec["policies"]["actions"] = {"respond_campaign": spec["policies"]["actions"]["respond_campaign"]}
    spec["training"]["spine"]["data_end"] = "2017-10-04"  # campaign 16's send: nothing later is trained on
    spec["training"].update({"min_positives": 10, "min_negatives": 10})
    (root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    # Every 6th household that received a campaign (about 260 of 1,559), with all their events.
    sends = pq.read_table(full / "events/campaigns.parquet")
    keep = pa.array(sorted(set(sends.column("customer_id").to_pylist()), key=int)[::6])
    out = root / "data/completejourney"
    (out / "events").mkdir(parents=True)
    for name in ("transactions", "campaigns", "coupon_redemptions"):
        table = pq.read_table(full / f"events/{name}.parquet")
        pq.write_table(
            table.filter(pc.is_in(table.column("customer_id"), keep)), out / f"events/{name}.parquet"
        )
    hh = pq.read_table(full / "households.parquet")
    pq.write_table(hh.filter(pc.is_in(hh.column("customer_id"), keep)), out / "households.parquet")
    ws = Workspace.open(root, require_spec=True)
    for source in ws.spec.sources:
        ingest_files(ws, [str(ws.spec.resolve(source.path))], source=source.name)
    for attrs in ws.spec.attributes:
        ingest_attributes(ws, attrs)
    result = train_project(ws, write_report=False)
    assert not result.skipped, result.skipped
    Registry(ws).set_production(result.bundle_id, forced=True, reason="test fixture")
    return ws, ws.state_dir / "training" / result.training_set


@pytest.mark.slow
def test_respond_rows_are_sends_whose_window_ends_with_the_campaign_and_never_straddle_a_split(
    cj: tuple[Workspace, Path],
) -> None:
    ws, folder = cj
    ts = load_training_set(folder, ws.spec.action("respond_campaign"))
    rows = ts.table
    assert rows.num_rows > 300 and 0 < pc.sum(rows.column("label")).as_py() < rows.num_rows
    # Every row is a send with its own trigger, matured by the data's end (2017-10-04, New York).
    assert (
        rows.column("trigger_id").null_count == 0
        and len(pc.unique(rows.column("trigger_id"))) == rows.num_rows
    )
    assert pc.max(rows.column("label_end")).as_py() <= datetime(2017, 10, 4, tzinfo=NY)
    # A campaign's sends are on one side of every boundary.
    sides: dict[str, set[str]] = {}
    for r in rows.select(["campaign_id", "split"]).to_pylist():
        sides.setdefault(r["campaign_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in sides.values()) and len(sides) >= 8, sides
    # The send's campaign is a feature: its type, offers and length.
    assert set(rows.column("campaign_type").to_pylist()) == {"Type A", "Type B", "Type C"}
    assert (
        pc.min(rows.column("campaign_offers")).as_py() >= 1 and rows.column("campaign_days").null_count == 0
    )
    # And the household's history with the products of the campaign's coupons (from before the send).
    assert rows.column("coupon_lines_bought_before").null_count == 0
    assert pc.max(rows.column("coupon_lines_bought_90d")).as_py() > 0
    # Campaign 13 (2017-08-08 to 2017-09-24): each window ends with the campaign's last day in New York.
    thirteen = rows.filter(pc.equal(rows.column("campaign_id"), "13"))
    end = datetime(2017, 9, 25, tzinfo=NY).astimezone(UTC) - timedelta(microseconds=1)
    assert set(thirteen.column("label_end").to_pylist()) == {end}
    assert set(thirteen.column("as_of").to_pylist()) == {datetime(2017, 8, 8, tzinfo=NY)}


@pytest.mark.slow
def test_score_triggers_scores_campaigns_16_to_19_at_each_send(
    cj: tuple[Workspace, Path], tmp_path: Path
) -> None:
    ws, _ = cj
    out = tmp_path / "sends.parquet"
    result = CliRunner().invoke(
        app,
        [
            "score",
            "-w",
            str(ws.root),
            "--triggers",
            "--from",
            "2017-10-04",
            "--to",
            "2017-11-16",
            "--out",
            str(out),
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out)
    assert validate_rows(rows) == [] and not any(rows.column("fallback").to_pylist())
    when = {
        r["trigger_id"].split("-")[1]: r["as_of"] for r in rows.select(["trigger_id", "as_of"]).to_pylist()
    }  # trigger ids are cs-<campaign>-<household>
    assert set(when) == {"16", "17", "18", "19"}
    assert when == {
        "16": datetime(2017, 10, 4, tzinfo=NY), "17": datetime(2017, 10, 18, tzinfo=NY),
        "18": datetime(2017, 10, 30, tzinfo=NY), "19": datetime(2017, 11, 15, tzinfo=NY),
    }  # fmt: skip
    scores = rows.column("score").to_numpy()
    assert 0 < scores.min() <= scores.max() < 1  # (on this small subset the model may be a constant)
