"""The leakage audit catches deliberately leaky definitions: an undated snapshot carrying the future outcome
(label-like and back-dated), a derived feature over it, a date attribute in the future; it reports late-event
sensitivity without flagging it, and proves that no definition reads past as_of."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from feature_helpers import insert_attributes, insert_events, new_log, spine
from pydantic import ValidationError

from propensity.core.event import UTC_TS
from propensity.events.ingest import ingest_attributes, ingest_table
from propensity.features import parse_features
from propensity.features.audit import (
    LEAK_FLAGS,
    AuditReport,
    audit_features,
    label_strength,
    roc_auc,
    write_audit_report,
)
from propensity.labels.audit import audit_workspace
from propensity.workspace import Workspace

START = datetime(2024, 1, 1, tzinfo=UTC)
SPEC = """
project: leaky
attributes:
  - name: crm_export            # an undated snapshot, loaded today: no valid_from
    path: crm.csv
  - name: profile               # a dated history
    path: profile.csv
    valid_from: signup_at
features:
  - {name: purchases_30d, aggregate: count, event_type: purchase, window: 30d}
  - {name: avg_amount_30d, aggregate: mean, field: amount, event_type: purchase, window: 30d}
  - {name: will_churn, kind: attribute, attribute: will_churn, source: crm_export, type: number}
  - {name: region, kind: attribute, attribute: region, source: profile}
  - {name: churn_risk, kind: derived, expr: "will_churn * 100 + avg_amount_30d"}
actions:
  - template: churn
    target: {event_type: [purchase]}
training:
  spine: {slide: 7d, lookback: 35d}
"""


def _project(root: Path) -> Workspace:
    """40 customers buying every 3 days; c0..c19 stop after day 33 (they churn). A fifth of the others'
    purchases arrive 10 days late. The CRM export's will_churn is exactly the future outcome."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "propensity.yaml").write_text(SPEC, encoding="utf-8")
    (root / "crm.csv").write_text(
        "customer_id,will_churn\n" + "".join(f"c{i},{int(i < 20)}\n" for i in range(40)), encoding="utf-8"
    )
    (root / "profile.csv").write_text(
        "customer_id,signup_at,region\n"
        + "".join(
            f"c{i},{(START + timedelta(hours=i)).isoformat()},{['NA', 'EU', 'UK'][i % 3]}\n"
            for i in range(40)
        ),
        encoding="utf-8",
    )
    ws = Workspace.open(root)
    rng = np.random.default_rng(7)
    ids, cids, times, avail, amounts = [], [], [], [], []
    for i in range(40):
        last = 34 if i < 20 else 121
        for n, day in enumerate(range(0, last, 3)):
            t = START + timedelta(days=day, hours=10 + i % 5)
            ids.append(f"p{i}-{day}")
            cids.append(f"c{i}")
            times.append(t)
            avail.append(t + timedelta(days=10) if i >= 20 and n % 5 == 0 else t)
            amounts.append(float(rng.uniform(5, 100)))
    ingest_table(
        ws,
        pa.table(
            {
                "event_id": ids,
                "customer_id": cids,
                "event_type": ["purchase"] * len(ids),
                "event_time": pa.array(times, UTC_TS),
                "available_at": pa.array(avail, UTC_TS),
                "amount": amounts,
            }
        ),
    )
    for source in ws.spec.attributes:
        ingest_attributes(ws, source)
    return ws


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> AuditReport:
    return audit_workspace(_project(tmp_path_factory.mktemp("leaky")))


def test_future_outcome_snapshot_is_caught(report: AuditReport) -> None:
    assert report.actions["churn_30d"]["positives"] > 20
    leaky = report.feature("will_churn")
    assert leaky.auc["churn_30d"] == pytest.approx(1.0)
    assert set(leaky.flags) == {"label_like", "backdated"}
    assert leaky.checks["backdated"].share == 1.0  # loaded now: no training as_of could have had it
    example = leaky.checks["backdated"].examples[0]
    assert example["value"] in (0.0, 1.0) and example["would_be"] is None
    derived = report.feature("churn_risk")  # a derived feature over the leak is caught too
    assert derived.depends_on == ["avg_amount_30d", "will_churn"]
    assert {"label_like", "backdated"} <= set(derived.flags)
    assert any("via avg_amount_30d, will_churn" in n for n in derived.notes)
    assert {f.name for f in report.flagged if f.leaky} == {"will_churn", "churn_risk"}


def test_dated_history_and_honest_features_are_not_flagged(report: AuditReport) -> None:
    assert report.feature("region").flags == []  # a dated history source is trusted
    assert report.feature("avg_amount_30d").flags == []
    assert not report.feature("purchases_30d").leaky
    sources = {(s["source"], s["attribute"]): s["snapshot"] for s in report.attribute_sources}
    assert sources == {("crm_export", "will_churn"): True, ("profile", "region"): False}


def test_late_events_are_reported_as_sensitivity_not_as_leaks(report: AuditReport) -> None:
    late = report.feature("purchases_30d").checks["late_sensitive"]
    assert 0 < late.share < 1
    example = late.examples[0]
    assert example["customer_id"] in {f"c{i}" for i in range(20, 40)}  # only their events were late
    assert example["would_be"] > example["value"]  # the late events were left out, as they must be
    assert any("sensitive to late data" in n for n in report.feature("purchases_30d").notes)
    assert report.feature("region").checks["late_sensitive"].rows_differing == 0


def test_no_definition_reads_past_as_of(report: AuditReport) -> None:
    # Recomputing from the log cut at each as_of changes nothing: impossible by construction ...
    for f in report.features:
        assert f.checks["reads_beyond_as_of"].rows_differing == 0, f.name
    # ... because a window always ends at as_of: no negative window, no offset to shift it.
    with pytest.raises(ValidationError):
        parse_features([{"name": "x", "aggregate": "count", "window": "-7d"}])
    with pytest.raises(ValidationError):
        parse_features([{"name": "x", "aggregate": "count", "window": "7d", "offset": "-7d"}])


def test_report_json(report: AuditReport, tmp_path: Path) -> None:
    path = write_audit_report(report, tmp_path / "reports")
    data = path.read_text(encoding="utf-8")
    assert '"will_churn"' in data and '"flagged"' in data


def test_sample_and_explicit_cutoffs(tmp_path: Path) -> None:
    ws = _project(tmp_path / "p")
    small = audit_workspace(
        ws, sample=10, cutoffs=[START + timedelta(days=40, hours=5), START + timedelta(days=49)]
    )
    assert small.customers <= 10 and small.cutoffs == 2  # an off-grid cutoff works too
    assert small.actions["churn_30d"]["rows"] == small.rows
    assert "backdated" in small.feature("will_churn").flags  # still caught on a sample


def test_future_date_attribute_and_auc_helpers() -> None:
    con = new_log()
    t = datetime(2024, 3, 1, tzinfo=UTC)
    insert_events(con, [{"event_id": "e1", "customer_id": "a", "event_type": "purchase", "event_time": t,
                         "available_at": t}])  # fmt: skip
    insert_attributes(
        con,
        [
            {"customer_id": "a", "attribute": "cancel_date", "value": "2024-06-01", "valid_from": START,
             "available_at": START, "source": "crm"},
            {"customer_id": "b", "attribute": "cancel_date", "value": "2023-06-01", "valid_from": START,
             "available_at": START, "source": "crm"},
        ],
    )  # fmt: skip
    features = parse_features(
        [{"name": "days_to_cancel", "kind": "attribute", "attribute": "cancel_date", "type": "days_since"}]
    )
    out = audit_features(con, features, spine([("a", t), ("b", t)]), cut_rows=1)
    f = out.feature("days_to_cancel")
    assert f.checks["reads_beyond_as_of"].rows_checked == 1 and f.checks["late_sensitive"].rows_checked == 0
    assert f.checks["future_date"].rows_differing == 1 and "future_date" in f.flags
    assert set(LEAK_FLAGS) >= {"future_date"}

    y = np.array([0, 0, 1, 1, 0, 1])
    assert roc_auc(np.array([1.0, 2.0, 3.0, 4.0, 2.0, 5.0]), y) == 1.0
    assert roc_auc(np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0]), y) == 0.5
    assert roc_auc(np.array([1.0, 2.0]), np.array([1, 1])) is None
    labels = np.array([0, 1] * 30)
    text = pa.chunked_array([pa.array(["yes" if v else "no" for v in labels])])
    assert label_strength(text, labels) == 1.0  # text features are target-encoded
    assert label_strength(pa.chunked_array([pa.array([None] * 60, pa.float64())]), labels) == 0.5


def test_cli_audit_prints_the_table_writes_json_and_fails_when_strict(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import propensity.cli.features_ops  # noqa: F401  (registers audit on the features sub-app)
    from propensity.cli.app import app

    ws = _project(tmp_path / "p")
    runner = CliRunner()
    args = ["features", "audit", "-w", str(ws.root), "--action", "churn_30d", "--sample", "0"]
    loose = runner.invoke(app, args, env={"COLUMNS": "250"})
    assert loose.exit_code == 0, loose.output
    assert "will_churn" in loose.output and "label_like" in loose.output and "back-dated" in loose.output
    strict = runner.invoke(app, [*args, "--strict"], env={"COLUMNS": "250"})
    assert strict.exit_code == 1
    reports = sorted((ws.state_dir / "reports").glob("features-audit-*.json"))
    assert reports and '"churn_risk"' in reports[-1].read_text(encoding="utf-8")
