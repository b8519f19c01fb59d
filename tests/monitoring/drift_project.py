"""A small three-source workspace whose data is stationary by construction, with drift injected on request.

Sources: ``web`` (page views, many a day), ``shop`` (purchases with amounts), ``crm`` (campaign sends, daily).
Every customer's rates are fixed for the whole period, so a reference from early weeks and a snapshot at the end
differ only by sampling noise, unless one of the injections below changes the data:

* ``shift_amounts``: purchase amounts × 3 from ``SHIFT_FROM`` on (a shifted feature);
* ``broken_source``: ``crm`` sends nothing in the last 3 days (a source stops sending);
* ``stale_hours``: ``web`` has no events in the last N hours (a stale stream);
* ``null_amounts``: ``shop`` sends purchases without amounts from ``SHIFT_FROM`` on (a broken field);
* ``late_hours``: ``web`` events of the last two days arrive N hours after they happened (a lagging pipeline).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from propensity.events.ingest import ingest_files
from propensity.workspace import Workspace

START = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday: weekly grid cutoffs fall on day boundaries
DAYS = 84
END = START + timedelta(days=DAYS)  # the monitoring as_of
SHIFT_FROM = END - timedelta(days=14)
REFERENCE_AT = [START + timedelta(days=d) for d in (42, 49, 56, 63)]

FEATURES: list[dict[str, Any]] = [
    {"name": "pv_7d", "aggregate": "count", "event_type": "page_view", "window": "7d"},
    {"name": "pv_30d", "aggregate": "count", "event_type": "page_view", "window": "30d"},
    {"name": "purchases_30d", "aggregate": "count", "event_type": "purchase", "window": "30d"},
    {"name": "spend_30d", "aggregate": "sum", "field": "amount", "event_type": "purchase", "window": "30d"},
    {
        "name": "avg_order_30d",
        "aggregate": "mean",
        "field": "amount",
        "event_type": "purchase",
        "window": "30d",
    },
    {"name": "sends_30d", "aggregate": "count", "event_type": "campaign_sent", "window": "30d"},
]
SOURCES = ("web", "shop", "crm")


def _events(
    customers: int,
    seed: int,
    *,
    shift_amounts: bool,
    broken_source: bool,
    stale_hours: int,
    null_amounts: bool,
    late_hours: int,
) -> dict[str, pa.Table]:
    rng = np.random.default_rng(seed)
    ids = np.array([f"c{i:04d}" for i in range(customers)])
    pv_rate = rng.gamma(2.0, 1.5, customers)  # page views per day
    buy_rate = rng.gamma(1.5, 0.05, customers)  # purchases per day
    send_p = 0.05  # daily chance of a campaign send
    out: dict[str, list[tuple[str, str, datetime, float | None]]] = {s: [] for s in SOURCES}
    for day in range(DAYS):
        base = START + timedelta(days=day)
        for kind, rate, source in (("page_view", pv_rate, "web"), ("purchase", buy_rate, "shop")):
            counts = rng.poisson(rate)
            for c in np.flatnonzero(counts):
                for _ in range(counts[c]):
                    t = base + timedelta(seconds=float(rng.uniform(0, 86400)))
                    amount = float(rng.gamma(2.0, 25.0)) if kind == "purchase" else None
                    if amount is not None and shift_amounts and t >= SHIFT_FROM:
                        amount *= 3
                    if null_amounts and t >= SHIFT_FROM:
                        amount = None
                    out[source].append((str(ids[c]), kind, t, amount))
        for c in np.flatnonzero(rng.random(customers) < send_p):
            t = base + timedelta(seconds=float(rng.uniform(0, 86400)))
            out["crm"].append((str(ids[c]), "campaign_sent", t, None))
    if broken_source:
        out["crm"] = [e for e in out["crm"] if e[2] < END - timedelta(days=3)]
    if stale_hours:
        out["web"] = [e for e in out["web"] if e[2] < END - timedelta(hours=stale_hours)]
    tables = {}
    for source, rows in out.items():
        delay = rng.exponential(300.0, len(rows))  # seconds until the platform has the event
        times = [r[2] for r in rows]
        if late_hours and source == "web":
            late = np.array([t >= END - timedelta(days=2) for t in times], dtype=bool)
            delay = np.where(late, delay + late_hours * 3600.0, delay)
        tables[source] = pa.table(
            {
                "event_id": [f"{source}-{i}" for i in range(len(rows))],
                "customer_id": [r[0] for r in rows],
                "event_type": [r[1] for r in rows],
                "event_time": pa.array(times, pa.timestamp("us", tz="UTC")),
                "available_at": pa.array(
                    [t + timedelta(seconds=float(d)) for t, d in zip(times, delay, strict=True)],
                    pa.timestamp("us", tz="UTC"),
                ),
                "amount": pa.array([r[3] for r in rows], pa.float64()),
            }
        )
    return tables


def build_drift_workspace(
    root: Path,
    *,
    customers: int = 400,
    seed: int = 0,
    shift_amounts: bool = False,
    broken_source: bool = False,
    stale_hours: int = 0,
    null_amounts: bool = False,
    late_hours: int = 0,
    monitoring: dict[str, Any] | None = None,
    alerts: dict[str, Any] | None = None,
) -> Workspace:
    """Generate, write and ingest the three sources; the reference is the four Mondays ``REFERENCE_AT``."""
    tables = _events(customers, seed, shift_amounts=shift_amounts, broken_source=broken_source,
                     stale_hours=stale_hours, null_amounts=null_amounts, late_hours=late_hours)  # fmt: skip
    for source, table in tables.items():
        (root / "data" / source).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / "data" / source / "events.parquet")
    spec = {
        "project": "monitoring-test",
        "sources": [
            {
                "name": s,
                "path": f"data/{s}/*.parquet",
                "format": "parquet",
                "columns": {"available_at": "available_at"},
            }
            for s in SOURCES
        ],
        "features": FEATURES,
        "monitoring": {"reference": {"at": [t.isoformat() for t in REFERENCE_AT]}, **(monitoring or {})},
        "alerts": alerts or {},
    }
    (root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    ws = Workspace.open(root)
    for source in SOURCES:
        ingest_files(ws, [str(root / "data" / source / "events.parquet")], source=source)
    return ws
