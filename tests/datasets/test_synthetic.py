"""The synthetic generator: contract of the files, ingestion artefacts, and a calibrated, informative oracle."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from propensity.core.event import STANDARD_EVENT_TYPES, UTC_TS
from propensity.datasets import _synthetic_model as m
from propensity.datasets.synthetic import (
    ACTIONS,
    CUSTOMERS_SCHEMA,
    ORACLE_SCHEMA,
    SyntheticSummary,
    default_cutoffs,
    generate,
)

START = datetime(2025, 9, 1, tzinfo=UTC)  # a Monday
EVENT_TYPES = {
    "event_id": pa.string(),
    "customer_id": pa.string(),
    "event_type": pa.string(),
    "event_time": UTC_TS,
    "available_at": UTC_TS,
    "amount": pa.float64(),
    "quantity": pa.float64(),
    "currency": pa.string(),
    "sku": pa.string(),
    "category": pa.string(),
    "campaign_id": pa.string(),
    "channel": pa.string(),
    "plan": pa.string(),
    "device": pa.string(),
    "page": pa.string(),
    "campaign_type": pa.string(),
}


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[SyntheticSummary, pa.Table, pa.Table, pa.Table]:
    """20k customers × 90 days (four cutoffs): enough rows to test calibration of every action."""
    out = tmp_path_factory.mktemp("synthetic")
    summary = generate(out, customers=20_000, days=90, seed=3, start=START, block_size=10_000)
    events = pq.read_table(out / "events")
    return summary, events, pq.read_table(out / "customers.parquet"), pq.read_table(out / "oracle.parquet")


def _auc(p: np.ndarray, y: np.ndarray) -> float:
    """Rank-based AUC (Mann–Whitney U), ties given their average rank."""
    order = np.argsort(p, kind="stable")
    ranks = np.empty(len(p))
    sorted_p = p[order]
    _, first, counts = np.unique(sorted_p, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    n1 = int(y.sum())
    n0 = len(y) - n1
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _eligible(oracle: pa.Table, action: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = oracle.filter(pc.and_(pc.equal(oracle["action"], action), oracle["eligible"]))
    customer = np.unique(rows["customer_id"].to_numpy(zero_copy_only=False), return_inverse=True)[1]
    return rows["probability"].to_numpy(), rows["label"].to_numpy().astype(np.int64), customer


def _standard_error(p: np.ndarray, y: np.ndarray, customer: np.ndarray) -> float:
    """Standard error of mean(y - p): binomial, or clustered by customer where that is larger.

    A customer appears at several weekly cutoffs and 30-day windows overlap, so one upgrade can be the label of
    up to five rows; summing residuals per customer before squaring accounts for that dependence.
    """
    n = len(p)
    binomial = np.sqrt(max(float(np.mean(p * (1 - p))), 1e-6) / n)
    per_customer = np.bincount(customer, weights=y - p)
    clustered = np.sqrt(float(np.sum(per_customer**2))) / n
    return max(binomial, clustered)


def test_files_and_schemas(big: tuple[SyntheticSummary, pa.Table, pa.Table, pa.Table]) -> None:
    summary, events, customers, oracle = big
    assert {name: events.schema.field(name).type for name in events.schema.names} == EVENT_TYPES
    assert customers.schema.equals(CUSTOMERS_SCHEMA)
    assert oracle.schema.equals(ORACLE_SCHEMA)
    parts = sorted(p.name for p in Path(summary.paths["events"]).glob("*.parquet"))
    assert parts == ["part-00000.parquet", "part-00001.parquet"]
    assert summary.events == events.num_rows
    stored = json.loads(Path(summary.paths["summary"]).read_text())
    assert stored["events"] == summary.events
    assert stored["cutoffs"] == [c.isoformat() for c in summary.cutoffs]
    assert list(summary.cutoffs) == default_cutoffs(START, 90)
    assert set(events["event_type"].unique().to_pylist()) <= set(STANDARD_EVENT_TYPES)
    assert set(customers["plan"].unique().to_pylist()) == {"free", "basic", "plus", "pro"}


def test_times_are_in_the_window_and_never_in_the_future(
    big: tuple[SyntheticSummary, pa.Table, pa.Table, pa.Table],
) -> None:
    summary, events, _, _ = big
    t = events["event_time"]
    assert pc.min(t).as_py() >= summary.start
    assert pc.max(t).as_py() < summary.end <= datetime.now(UTC)
    assert pc.all(pc.greater_equal(events["available_at"], t)).as_py()


def test_duplicates_and_late_events(big: tuple[SyntheticSummary, pa.Table, pa.Table, pa.Table]) -> None:
    summary, events, _, _ = big
    n = events.num_rows
    unique_ids = pc.count_distinct(events["event_id"]).as_py()
    assert n - unique_ids == summary.duplicates
    assert 0.003 < summary.duplicates / n < 0.008
    # Duplicates are exact repeats of a row.
    assert events.group_by(events.schema.names).aggregate([]).num_rows == unique_ids
    lag = pc.subtract(events["available_at"], events["event_time"]).cast(pa.int64())
    late = pc.sum(pc.greater(lag, 3_600_000_000)).as_py()
    assert 0.008 < late / n < 0.025
    assert pc.max(lag).as_py() <= 5 * 86_400_000_000


def test_deliverability_feedback_ends_a_customers_email(
    big: tuple[SyntheticSummary, pa.Table, pa.Table, pa.Table],
) -> None:
    """Bounces, spam complaints and unsubscribes (issue 19 item 8): a few percent of mailed customers, each
    after the customer's last email event, with nothing email-related after it."""
    _, events, _, _ = big
    email = ("campaign_sent", "campaign_open", "campaign_click")
    feedback = ("email_bounce", "spam_complaint", "unsubscribe")
    ev = events.filter(pc.is_in(events["event_type"], pa.array(email + feedback)))
    df = {c: ev[c].to_pylist() for c in ("customer_id", "event_type", "event_time", "campaign_id")}
    last_email: dict[str, datetime] = {}
    marked: dict[str, tuple[str, datetime]] = {}
    for cust, kind, when, campaign in zip(*df.values(), strict=True):
        if kind in feedback:
            assert cust not in marked and campaign  # once per customer, naming the campaign
            marked[cust] = (kind, when)
        else:
            last_email[cust] = max(when, last_email.get(cust, when))
    counts = {k: sum(1 for v in marked.values() if v[0] == k) for k in feedback}
    mailed = len(last_email)
    assert 0.005 < counts["email_bounce"] / mailed < 0.04, counts
    assert 0.005 < counts["unsubscribe"] / mailed < 0.03 and counts["spam_complaint"] > 0, counts
    assert all(last_email[c] < when for c, (_, when) in marked.items())


def test_sessions_form_funnels(big: tuple[SyntheticSummary, pa.Table, pa.Table, pa.Table]) -> None:
    _, events, _, _ = big
    counts = {r["values"]: r["counts"] for r in events["event_type"].value_counts().to_pylist()}
    assert (
        counts["page_view"]
        > counts["product_view"]
        > counts["cart_add"]
        > counts["checkout"]
        > counts["purchase"]
    )
    purchases = events.filter(pc.equal(events["event_type"], "purchase"))
    assert pc.all(pc.greater(purchases["amount"], 0)).as_py()
    assert purchases["sku"].null_count == 0 and purchases["category"].null_count == 0
    assert pc.count_distinct(purchases["sku"]).as_py() > 150
    assert pc.count_distinct(purchases["category"]).as_py() == 10
    campaign_buys = pc.sum(pc.is_valid(purchases["campaign_id"])).as_py()
    assert 0 < campaign_buys < purchases.num_rows
    for kind in (
        "campaign_sent",
        "campaign_open",
        "campaign_click",
        "renewal",
        "cancellation",
        "plan_upgrade",
    ):
        assert counts[kind] > 0, kind


def test_customers_have_as_of_versions(big: tuple[SyntheticSummary, pa.Table, pa.Table, pa.Table]) -> None:
    _, _, customers, _ = big
    assert pc.count_distinct(customers["customer_id"]).as_py() == 20_000
    firsts = customers.group_by("customer_id").aggregate([("valid_from", "min"), ("signup_at", "min")])
    assert firsts["valid_from_min"].equals(firsts["signup_at_min"])
    assert customers.num_rows > 20_000  # plan changes add versions
    emails = customers["email"].to_pylist()
    assert any("." in e.split("@")[0] and e.endswith("@gmail.com") for e in emails)
    assert all(p.startswith("+") for p in customers["phone"].to_pylist()[:100])


def test_every_action_has_positives_and_negatives(
    big: tuple[SyntheticSummary, pa.Table, pa.Table, pa.Table],
) -> None:
    _, _, _, oracle = big
    for action, horizon in ACTIONS:
        p, y, _ = _eligible(oracle, action)
        assert 0 < y.sum() < len(y), action
        assert np.all((p >= 0) & (p <= 1)), action
        rows = oracle.filter(pc.equal(oracle["action"], action))
        assert set(rows["horizon_days"].unique().to_pylist()) == {horizon}
    ineligible = oracle.filter(pc.invert(oracle["eligible"]))
    assert ineligible["probability"].null_count == ineligible.num_rows == ineligible["label"].null_count


@pytest.mark.parametrize("action", [a for a, _ in ACTIONS])
def test_oracle_is_calibrated_by_decile(
    big: tuple[SyntheticSummary, pa.Table, pa.Table, pa.Table], action: str
) -> None:
    _, _, _, oracle = big
    p, y, customer = _eligible(oracle, action)
    order = np.argsort(p, kind="stable")
    for decile, rows in enumerate(np.array_split(order, 10)):
        mean_p, rate = p[rows].mean(), y[rows].mean()
        se = _standard_error(p[rows], y[rows], np.unique(customer[rows], return_inverse=True)[1])
        assert abs(rate - mean_p) <= 3 * se + 0.002, (action, decile, mean_p, rate, se, len(rows))


@pytest.mark.parametrize("action", [a for a, _ in ACTIONS])
def test_oracle_is_informative(
    big: tuple[SyntheticSummary, pa.Table, pa.Table, pa.Table], action: str
) -> None:
    _, _, _, oracle = big
    p, y, _ = _eligible(oracle, action)
    floor = 0.8 if action in ("buy_7d", "churn_30d") else 0.65
    assert _auc(p, y) > floor


def test_labels_follow_the_documented_definitions(
    big: tuple[SyntheticSummary, pa.Table, pa.Table, pa.Table],
) -> None:
    """Rebuild buy_7d and churn_30d labels from the written events, as a label builder would."""
    summary, events, _, oracle = big
    t = summary.cutoffs[0]
    ev = events.group_by(["event_id", "customer_id", "event_type", "event_time"]).aggregate([])
    after = pc.and_(
        pc.greater(ev["event_time"], pa.scalar(t, UTC_TS)),
        pc.less_equal(ev["event_time"], pa.scalar(t + timedelta(days=7), UTC_TS)),
    )
    buyers = set(ev.filter(pc.and_(after, pc.equal(ev["event_type"], "purchase")))["customer_id"].to_pylist())
    rows = oracle.filter(
        pc.and_(pc.equal(oracle["action"], "buy_7d"), pc.equal(oracle["cutoff"], pa.scalar(t, UTC_TS)))
    )
    labels = dict(zip(rows["customer_id"].to_pylist(), rows["label"].to_pylist(), strict=True))
    assert {c for c, v in labels.items() if v == 1} == buyers & labels.keys()


def test_weekly_transitions_are_distributions() -> None:
    cal, promo = m.calendar(START, 28)
    table = m.transition_tables(cal, promo)
    assert table.shape == (4, m.N_KEYS, m.N_STATES, m.N_STATES)
    assert np.all(table >= 0)
    assert np.allclose(table.sum(axis=-1), 1.0)


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    kwargs = {"customers": 1_500, "days": 70, "start": START}
    a = generate(tmp_path / "a", seed=7, **kwargs)  # type: ignore[arg-type]
    b = generate(tmp_path / "b", seed=7, **kwargs)  # type: ignore[arg-type]
    c = generate(tmp_path / "c", seed=8, **kwargs)  # type: ignore[arg-type]
    for name in ("events", "customers.parquet", "oracle.parquet"):
        ta, tb, tc = (pq.read_table(s.paths["summary"].parent / name) for s in (a, b, c))
        assert ta.equals(tb), name
        assert not ta.equals(tc), name
    assert a.events == b.events and a.cutoffs == b.cutoffs == (START + timedelta(days=35),)


def test_progress_is_reported(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    generate(
        tmp_path,
        customers=250,
        days=21,
        start=START,
        block_size=100,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(100, 250), (200, 250), (250, 250)]
    assert pq.read_table(tmp_path / "oracle.parquet").num_rows == 0  # too short for any cutoff


def test_bad_start_and_cutoffs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Monday"):
        generate(tmp_path, customers=10, days=70, start=START + timedelta(days=1))
    with pytest.raises(ValueError, match="week boundary"):
        generate(tmp_path, customers=10, days=70, start=START, cutoffs=[START + timedelta(days=36)])
    with pytest.raises(ValueError, match="history"):
        generate(tmp_path, customers=10, days=70, start=START, cutoffs=[START + timedelta(days=28)])
    with pytest.raises(ValueError, match="after now"):
        generate(tmp_path, customers=10, days=70, start=datetime(2999, 1, 7, tzinfo=UTC))


def test_default_start_ends_before_now(tmp_path: Path) -> None:
    summary = generate(tmp_path, customers=50, days=14)
    assert summary.start.weekday() == 0
    assert summary.end <= datetime.now(UTC) - timedelta(days=7)


def test_example_spec_loads() -> None:
    from propensity.config.spec import load_spec

    spec_path = Path(__file__).resolve().parents[2] / "src/propensity/datasets/projects/synthetic.yaml"
    spec = load_spec(spec_path)
    assert spec.source("events").format == "parquet"
    assert spec.attributes[0].valid_from == "valid_from"


def test_oracle_is_a_function_of_what_is_observable(
    big: tuple[SyntheticSummary, pa.Table, pa.Table, pa.Table],
) -> None:
    """buy_7d truth depends only on state visible at the cutoff: rebuilt from the files, it pins the probability.

    The state is the engagement level (active days in each of the last three weeks, from page_views available
    by the cutoff), the weeks since the last purchase (up to four), subscriber flag, tenure bucket, region and
    email consent (customers.parquet as of the cutoff).
    """
    summary, events, customers, oracle = big
    t = summary.cutoffs[0]
    pv = events.filter(
        pc.and_(
            pc.equal(events["event_type"], "page_view"),
            pc.less_equal(events["available_at"], pa.scalar(t, UTC_TS)),
        )
    ).to_pandas()
    buys = events.filter(
        pc.and_(
            pc.equal(events["event_type"], "purchase"),
            pc.less_equal(events["available_at"], pa.scalar(t, UTC_TS)),
        )
    ).to_pandas()
    buys = buys[(buys.event_time > t - timedelta(days=28)) & (buys.event_time <= t)]
    since = ((t - buys.event_time).dt.days // 7).groupby(buys.customer_id).min()
    pv = pv[(pv.event_time > t - timedelta(days=21)) & (pv.event_time <= t)]
    day = (pv.event_time - (t - timedelta(days=21))).dt.days
    pv = pv.assign(week=day // 7, day=day).drop_duplicates(["customer_id", "day"])
    active = (
        pv.groupby(["customer_id", "week"])
        .size()
        .unstack(fill_value=0)
        .reindex(columns=[0, 1, 2], fill_value=0)
    )

    def level(k3: int, k2: int, k1: int) -> int:
        if k1:
            return 3 if k1 == 1 else 4 if k1 <= 3 else 5
        return 2 if k2 else 1 if k3 else 0

    levels = {c: level(*row) for c, row in zip(active.index, active.to_numpy().tolist(), strict=True)}
    cust = customers.to_pandas()
    cust = cust[cust.valid_from <= t].sort_values("valid_from").groupby("customer_id").last()
    tenure = (t - cust.signup_at).dt.days
    cust["bucket"] = np.searchsorted([28, 182], tenure.to_numpy(), side="right")
    cust["subscriber"] = cust.plan != "free"
    cust["level"] = [levels.get(c, 0) for c in cust.index]
    cust["since"] = since.reindex(cust.index).fillna(4).astype(int)
    rows = oracle.filter(
        pc.and_(pc.equal(oracle["action"], "buy_7d"), pc.equal(oracle["cutoff"], pa.scalar(t, UTC_TS)))
    ).to_pandas()
    rows = rows.join(cust, on="customer_id")
    spread = rows.groupby(
        ["level", "since", "subscriber", "bucket", "region", "consent_email"]
    ).probability.agg(lambda p: p.max() - p.min())
    assert len(spread) > 50
    assert spread.max() < 1e-12
