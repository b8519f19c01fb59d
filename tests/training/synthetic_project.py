"""A small synthetic workspace for the training tests: generated data, ingested, with a compact feature set."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from propensity.datasets.examples import example_feature
from propensity.events.ingest import ingest_attributes, ingest_files
from propensity.workspace import Workspace

START = datetime(2025, 1, 6, tzinfo=UTC)

_PV = {"aggregate": "count", "event_type": "page_view"}
FEATURES: list[dict[str, Any]] = [
    {"name": "pv_7d", **_PV, "window": "7d"},
    {"name": "pv_14d", **_PV, "window": "14d"},
    {"name": "pv_21d", **_PV, "window": "21d"},
    {"name": "pv_30d", **_PV, "window": "30d"},
    {
        "name": "days_since_pv",
        "aggregate": "time_since_last",
        "event_type": "page_view",
        "window": "lifetime",
    },
    {"name": "purchases_30d", "aggregate": "count", "event_type": "purchase", "window": "30d"},
    {"name": "spend_90d", "aggregate": "sum", "field": "amount", "event_type": "purchase", "window": "90d"},
    {
        "name": "days_since_purchase",
        "aggregate": "time_since_last",
        "event_type": "purchase",
        "window": "lifetime",
    },
    {"name": "cart_adds_14d", "aggregate": "count", "event_type": "cart_add", "window": "14d"},
    {"name": "opens_30d", "aggregate": "count", "event_type": "campaign_open", "window": "30d"},
    {"name": "clicks_30d", "aggregate": "count", "event_type": "campaign_click", "window": "30d"},
    {"name": "sends_30d", "aggregate": "count", "event_type": "campaign_sent", "window": "30d"},
    {
        "name": "days_since_billing",
        "aggregate": "time_since_last",
        "event_type": ["subscription_start", "renewal"],
        "window": "lifetime",
    },
    {"name": "renewals", "aggregate": "count", "event_type": "renewal", "window": "lifetime"},
    {
        "name": "days_since_renewal",
        "aggregate": "time_since_last",
        "event_type": "renewal",
        "window": "lifetime",
    },
    {
        "name": "days_since_sub_start",
        "aggregate": "time_since_last",
        "event_type": "subscription_start",
        "window": "lifetime",
    },
    {"name": "plan", "kind": "attribute", "attribute": "plan"},
    {"name": "region", "kind": "attribute", "attribute": "region"},
    {"name": "consent_email", "kind": "attribute", "attribute": "consent_email", "type": "boolean"},
    {"name": "tenure_days", "kind": "attribute", "attribute": "signup_at", "type": "days_since"},
]
ACTIONS: list[dict[str, Any]] = [{"template": t} for t in ("buy", "upgrade", "renew", "respond", "churn")]


def spec_dict(data: str, *, days: int, training: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "project": "synthetic-test",
        "sources": [
            {
                "name": "events",
                "path": f"{data}/events/*.parquet",
                "format": "parquet",
                "columns": {"available_at": "available_at"},
            },
        ],
        "attributes": [
            {
                "name": "customers",
                "path": f"{data}/customers.parquet",
                "format": "parquet",
                "customer_id": "customer_id",
                "valid_from": "valid_from",
                "attributes": ["signup_at", "region", "plan", "consent_email", "consent_ads"],
            },
        ],
        "features": [*FEATURES, example_feature("synthetic", "promos_sent_1d")],
        "actions": ACTIONS,
        "training": training or {},
    }


def build_workspace(root: Path, *, customers: int, days: int, seed: int = 0, **spec_extra: Any) -> Workspace:
    """Generate synthetic data into ``root/data`` and ingest it into a workspace at ``root``."""
    from propensity.datasets.synthetic import generate

    generate(root / "data", customers=customers, days=days, seed=seed, start=START)
    spec = spec_dict("data", days=days, **spec_extra)
    (root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    ws = Workspace.open(root)
    ingest_files(ws, [str(p) for p in sorted((root / "data" / "events").glob("*.parquet"))], source="events")
    for attr in ws.spec.attributes:
        ingest_attributes(ws, attr)
    return ws


def trained_workspace(
    root: Path,
    *,
    customers: int,
    days: int,
    seed: int = 0,
    spec: dict[str, Any] | None = None,
    train_actions: list[str] | None = None,
) -> Workspace:
    """:func:`build_workspace`, with the sections in ``spec`` replacing the generated spec's, then trained (all
    actions, or ``train_actions``) and the bundle put in production: a small project ready to score and serve."""
    from propensity.registry.registry import Registry
    from propensity.registry.train import train_project

    build_workspace(root, customers=customers, days=days, seed=seed)
    data = yaml.safe_load((root / "propensity.yaml").read_text())
    data.update(spec or {})
    (root / "propensity.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    ws = Workspace.open(root)
    result = train_project(ws, actions=train_actions, write_report=False)
    Registry(ws).set_production(result.bundle_id, forced=True, reason="test fixture")
    return ws
