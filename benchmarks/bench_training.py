"""Train all five actions end to end from the event log (issue target: 1M training rows × 40 features × 5
actions in under 5 minutes on 2 cores); report time per stage and peak RSS.

Setup (not timed against the target): generate the synthetic data set and ingest it into a workspace, cached in
``benchmarks/.data``. Timed, in a fresh process: labels and eligibility, point-in-time features (the offline
engine), time splits, and per action the search (linear penalties, LightGBM configurations), the champion,
the backtest of the refit procedure and the refit on every matured row, then bundle and report. The spine
stops at the last cutoff the oracle covers, so the same run gives the acceptance figures (model vs oracle AUC and
ECE on the same test rows).

    python -m benchmarks.bench_training --customers 50000 --days 210
    python -m benchmarks.bench_training --dataset completejourney   # real data: buy, churn, respond
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from benchmarks._harness import ingest_completejourney, measure, save
from propensity.datasets.examples import example_feature

DATA = Path(__file__).parent / ".data"
START = datetime(2025, 1, 6, tzinfo=UTC)


def _count(name: str, etype: str | list[str], window: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "aggregate": "count", "event_type": etype, "window": window, **kw}


def _since(name: str, etype: str | list[str]) -> dict[str, Any]:
    return {"name": name, "aggregate": "time_since_last", "event_type": etype, "window": "lifetime"}


FEATURES: list[dict[str, Any]] = [
    *(_count(f"page_views_{w}", "page_view", w) for w in ("1d", "3d", "7d", "14d", "21d", "30d", "60d")),
    *(_count(f"product_views_{w}", "product_view", w) for w in ("7d", "30d")),
    *(_count(f"searches_{w}", "search", w) for w in ("7d", "30d")),
    *(_count(f"cart_adds_{w}", "cart_add", w) for w in ("7d", "30d")),
    _count("checkouts_30d", "checkout", "30d"),
    *(_count(f"purchases_{w}", "purchase", w) for w in ("7d", "30d", "90d")),
    {"name": "spend_30d", "aggregate": "sum", "field": "amount", "event_type": "purchase", "window": "30d"},
    {"name": "spend_90d", "aggregate": "sum", "field": "amount", "event_type": "purchase", "window": "90d"},
    {
        "name": "mean_order_90d",
        "aggregate": "mean",
        "field": "amount",
        "event_type": "purchase",
        "window": "90d",
    },
    _count("refunds_90d", "refund", "90d"),
    _count("sends_7d", "campaign_sent", "7d"),
    _count("sends_30d", "campaign_sent", "30d"),
    _count("opens_30d", "campaign_open", "30d"),
    _count("clicks_30d", "campaign_click", "30d"),
    _count("coupons_90d", "coupon_redemption", "90d"),
    _since("days_since_page_view", "page_view"),
    _since("days_since_purchase", "purchase"),
    _since("days_since_cart_add", "cart_add"),
    _since("days_since_click", "campaign_click"),
    _count("renewals", "renewal", "lifetime"),
    _since("days_since_renewal", "renewal"),
    _since("days_since_sub_start", "subscription_start"),
    _since("days_since_billing", ["subscription_start", "renewal"]),
    {"name": "plan", "kind": "attribute", "attribute": "plan"},
    {"name": "region", "kind": "attribute", "attribute": "region"},
    {"name": "consent_email", "kind": "attribute", "attribute": "consent_email", "type": "boolean"},
    {"name": "tenure_days", "kind": "attribute", "attribute": "signup_at", "type": "days_since"},
    {"name": "cart_per_view_30d", "kind": "derived", "expr": "cart_adds_30d / product_views_30d"},
]


def ingested_workspace(root: Path, customers: int, days: int, seed: int, spec: dict[str, Any]) -> Path:
    """Generate synthetic data and ingest it into ``root`` once (a ``ready`` marker caches it); the spec is
    rewritten on every call, so a benchmark may change features or settings without regenerating."""
    spec_file = root / "propensity.yaml"
    if not (root / ".propensity" / "ready").exists():
        from propensity.datasets.synthetic import generate
        from propensity.events.ingest import ingest_attributes, ingest_files
        from propensity.workspace import Workspace

        generate(root / "data" / "synthetic", customers=customers, days=days, seed=seed, start=START)
        spec_file.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        ws = Workspace.open(root)
        ingest_files(
            ws, sorted(str(p) for p in (root / "data/synthetic/events").glob("*.parquet")), source="events"
        )
        for attr in ws.spec.attributes:
            ingest_attributes(ws, attr)
        (root / ".propensity" / "ready").write_text("ok")
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return root


def workspace(customers: int, days: int, seed: int) -> Path:
    """Generate and ingest once (cached); return the workspace folder."""
    spec = yaml.safe_load(
        (Path(__file__).parents[1] / "src/propensity/datasets/projects/synthetic.yaml").read_text()
    )
    spec["features"] = [*FEATURES, example_feature("synthetic", "promos_sent_1d")]
    spec["training"] = {"spine": {"end": (START + timedelta(days=days - 30)).isoformat()}}
    return ingested_workspace(DATA / f"training-{customers}-{days}-{seed}", customers, days, seed, spec)


def _cj_features() -> list[dict[str, Any]]:
    """42 features for The Complete Journey: purchase recency/frequency/monetary, baskets, breadth, coupons and
    campaigns, demographics."""
    p = {"event_type": "purchase"}
    out: list[dict[str, Any]] = []
    for w in ("7d", "14d", "30d", "90d"):
        out.append({"name": f"lines_{w}", "aggregate": "count", **p, "window": w})
        out.append({"name": f"spend_{w}", "aggregate": "sum", "field": "amount", **p, "window": w})
        out.append(
            {
                "name": f"baskets_{w}",
                "aggregate": "count_distinct",
                "field": "properties.basket_id",
                **p,
                "window": w,
            }
        )
    for w in ("30d", "90d"):
        out.append({"name": f"skus_{w}", "aggregate": "count_distinct", "field": "sku", **p, "window": w})
        out.append(
            {"name": f"categories_{w}", "aggregate": "count_distinct", "field": "category", **p, "window": w}
        )
        out.append({"name": f"mean_line_{w}", "aggregate": "mean", "field": "amount", **p, "window": w})
        out.append(
            {"name": f"coupons_{w}", "aggregate": "count", "event_type": "coupon_redemption", "window": w}
        )
        out.append(
            {"name": f"campaigns_{w}", "aggregate": "count", "event_type": "campaign_sent", "window": w}
        )
        out.append(
            {
                "name": f"discounted_{w}",
                "aggregate": "count",
                **p,
                "where": "properties.coupon_disc != '0.0'",
                "window": w,
            }
        )
    out += [
        _since("days_since_purchase", "purchase"),
        {"name": "days_since_first", "aggregate": "time_since_first", **p, "window": "lifetime"},
        {"name": "lines_lifetime", "aggregate": "count", **p, "window": "lifetime"},
        {"name": "spend_lifetime", "aggregate": "sum", "field": "amount", **p, "window": "lifetime"},
        _count("coupons_lifetime", "coupon_redemption", "lifetime"),
        _count("campaigns_lifetime", "campaign_sent", "lifetime"),
        _since("days_since_campaign", "campaign_sent"),
        _since("days_since_coupon", "coupon_redemption"),
        {
            "name": "last_campaign_type",
            "aggregate": "last",
            "field": "properties.campaign_type",
            "event_type": "campaign_sent",
            "window": "lifetime",
        },
        {"name": "spend_per_basket_30d", "kind": "derived", "expr": "spend_30d / baskets_30d"},
        {"name": "trend_7_30", "kind": "derived", "expr": "spend_7d / (spend_30d + 1)"},
    ]
    for a in (
        "age",
        "income",
        "home_ownership",
        "marital_status",
        "household_size",
        "household_comp",
        "kids_count",
    ):
        out.append({"name": a, "kind": "attribute", "attribute": a})
    return out


def cj_workspace() -> Path:
    """The Complete Journey exported and ingested once (cached), with the example project's actions."""
    root = DATA / "training-completejourney"
    spec = yaml.safe_load(
        (Path(__file__).parents[1] / "src/propensity/datasets/projects/completejourney.yaml").read_text()
    )
    spec["features"] = _cj_features()
    (root).mkdir(parents=True, exist_ok=True)
    (root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    ingest_completejourney(root)
    return root


TRAIN = """
import json
from propensity.workspace import Workspace
from propensity.registry.train import train_project
r = train_project(Workspace.open({root!r}))
out = {{"bundle": r.bundle_id, "seconds": r.seconds, "skipped": r.skipped,
        "rows": {{a: sum(v["rows"] for v in res.counts.values()) for a, res in r.results.items()}},
        "features": len(Workspace.open({root!r}).spec.features), "report": r.report_json}}
print(json.dumps(out, default=str))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=210)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", choices=["synthetic", "completejourney"], default="synthetic")
    args = parser.parse_args()
    cj = args.dataset == "completejourney"
    root = cj_workspace() if cj else workspace(args.customers, args.days, args.seed)
    m = measure(TRAIN.format(root=str(root)))
    out = json.loads(m.output.strip().splitlines()[-1])
    report = out.pop("report")
    accuracy = {}
    for action, e in sorted((k, v) for k, v in report.items() if k != "_meta"):
        o = e.get("on_oracle_rows") or {}
        accuracy[action] = {
            "served_model": e.get("model_kind"),
            "test_rows": e["test_rows"],
            "model": e["model"],
            "baseline": e["baseline"],
            "oracle_roc_auc": e.get("oracle_roc_auc"),
            "oracle_ece": e.get("oracle_ece"),
            "oracle_rows": o.get("rows"),
            "auc_gap_to_oracle": None if not o else o["oracle"]["roc_auc"] - o["model"]["roc_auc"],
        }
    result = {
        "dataset": args.dataset,
        "customers": 2469 if cj else args.customers,
        "days": 365 if cj else args.days,
        "features": out["features"],
        "training_rows": out["rows"],
        "training_rows_total": sum(out["rows"].values()),
        "seconds_total": round(m.seconds, 1),
        # CPU seconds of the training process (all threads): what the shared machine's load distorts least.
        "cpu_seconds_total": round(m.cpu_seconds, 1),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "seconds_by_stage": {k: round(v, 2) for k, v in out["seconds"].items()},
        "peak_rss_mib": round(m.peak_rss_mib),
        "target_seconds": 300,
        "skipped": out["skipped"],
        "accuracy": accuracy,
    }
    path = save("training_completejourney" if cj else "training", result)
    print(json.dumps({k: v for k, v in result.items() if k != "accuracy"}, indent=2))
    for action, a in accuracy.items():
        m, b = a["model"], a["baseline"]
        print(f"{action:>12} [{a['served_model']}]: AUC {m['roc_auc']:.4f}/{b['roc_auc']:.4f} PR-AUC "
              f"{m['pr_auc']:.4f}/{b['pr_auc']:.4f} Brier {m['brier']:.4f}/{b['brier']:.4f} "
              f"ECE {m['ece']:.4f}/{b['ece']:.4f} (model/baseline); "
              f"oracle AUC {a['oracle_roc_auc']}")  # fmt: skip
    print(f"saved {path}")


if __name__ == "__main__":
    main()
