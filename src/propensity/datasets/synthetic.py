"""A synthetic data set with ground truth: events, customer attributes and the true propensity of every action.

``generate()`` simulates customers week by week (sessions with page views → product views → cart adds →
checkouts → purchases, with weekly and seasonal cycles; subscriptions with upgrades, renewals and cancellations;
weekly campaign waves with opens, clicks and conversions; a few late-arriving and duplicate events) and writes,
for each requested cutoff, each customer's true probability of each of the five actions (the *oracle*). The
oracle depends only on what the events and attributes show by the cutoff plus independent noise, so a perfect
model could reach it, and it is calibrated by construction (the tests check it against realised labels).

The generative story, the action definitions and the file layout are in ``docs/synthetic-data.md``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from propensity.core.clock import as_utc
from propensity.core.event import UTC_TS
from propensity.datasets import _synthetic_model as m
from propensity.datasets._synthetic_events import (
    build_events,
    campaign_ids,
    catalog_prices,
    to_table,
    write_events,
)
from propensity.datasets._synthetic_oracle import ACTIONS, oracle_block
from propensity.datasets._synthetic_sim import BlockSim, simulate_block

__all__ = [
    "ACTIONS",
    "CUSTOMERS_SCHEMA",
    "ORACLE_SCHEMA",
    "SyntheticSummary",
    "default_cutoffs",
    "generate",
]

BLOCK_SIZE = 50_000
MIN_HISTORY_DAYS = 35  # the first cutoff: 3 weeks fix the engagement level, 30 days reveal every billing date
LONGEST_HORIZON_DAYS = max(h for _, h in ACTIONS)

CUSTOMERS_SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.string()),
        pa.field("valid_from", UTC_TS),
        pa.field("signup_at", UTC_TS),
        pa.field("region", pa.string()),
        pa.field("plan", pa.string()),
        pa.field("consent_email", pa.bool_()),
        pa.field("consent_ads", pa.bool_()),
        pa.field("email", pa.string()),
        pa.field("phone", pa.string()),
    ]
)
ORACLE_SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.string()),
        pa.field("cutoff", UTC_TS),
        pa.field("action", pa.string()),
        pa.field("horizon_days", pa.int32()),
        pa.field("eligible", pa.bool_()),
        pa.field("probability", pa.float64()),
        pa.field("label", pa.int8()),
    ]
)

_FIRST = ("anna", "ben", "chloe", "david", "emma", "felix", "grace", "hugo", "ines", "jack", "lena", "omar")
_LAST = ("smith", "garcia", "muller", "rossi", "tanaka", "dubois", "kowalski", "silva", "jones", "lee")


@dataclass(frozen=True)
class SyntheticSummary:
    """What :func:`generate` wrote: sizes, the time span, the oracle cutoffs and where the files are."""

    customers: int
    days: int
    events: int  # rows written, duplicates included
    duplicates: int
    late_events: int
    start: datetime
    end: datetime
    cutoffs: tuple[datetime, ...]
    paths: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "customers": self.customers,
            "days": self.days,
            "events": self.events,
            "duplicates": self.duplicates,
            "late_events": self.late_events,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "cutoffs": [c.isoformat() for c in self.cutoffs],
            "paths": {k: str(v) for k, v in self.paths.items()},
            "seconds": round(self.seconds, 3),
        }


def _default_start(days: int, now: datetime) -> datetime:
    """The Monday 00:00 UTC that ends the data at least a week before ``now`` (room for late arrivals)."""
    latest = (now - timedelta(days=days + 7)).replace(hour=0, minute=0, second=0, microsecond=0)
    return latest - timedelta(days=latest.weekday())


def default_cutoffs(start: datetime, days: int) -> list[datetime]:
    """Weekly cutoffs (Mondays 00:00 UTC) from day 35 while the longest horizon (30 days) fits in the data."""
    return [start + timedelta(days=d) for d in range(MIN_HISTORY_DAYS, days - LONGEST_HORIZON_DAYS + 1, 7)]


def _cutoff_weeks(start: datetime, days: int, cutoffs: Sequence[datetime]) -> list[int]:
    weeks = []
    for c in cutoffs:
        delta = as_utc(c) - start
        d = delta.days
        if delta != timedelta(days=d) or d % 7:
            raise ValueError(
                f"cutoff {c.isoformat()} is not a week boundary of the data (a Monday 00:00 UTC counted from "
                f"start {start.isoformat()}); the oracle is exact only on week boundaries"
            )
        if d < MIN_HISTORY_DAYS or d + LONGEST_HORIZON_DAYS > days:
            raise ValueError(
                f"cutoff {c.isoformat()} is day {d} of {days}; cutoffs need {MIN_HISTORY_DAYS} days of history "
                f"and {LONGEST_HORIZON_DAYS} days of horizon inside the data"
            )
        weeks.append(d // 7)
    return sorted(set(weeks))


def _contact_details(
    gids: np.ndarray, region: np.ndarray, rng: np.random.Generator
) -> tuple[list[str], list[str]]:
    gmail = rng.random(len(gids)) < 0.3
    first = rng.integers(0, len(_FIRST), len(gids))
    last = rng.integers(0, len(_LAST), len(gids))
    emails = [
        f"{_FIRST[f]}.{_LAST[la]}{g}@gmail.com" if gm else f"c{g}@example.com"
        for g, gm, f, la in zip(gids.tolist(), gmail.tolist(), first.tolist(), last.tolist(), strict=True)
    ]
    phones = [f"{m.REGION_PHONE[r]}555{g:07d}" for g, r in zip(gids.tolist(), region.tolist(), strict=True)]
    return emails, phones


def _customers_table(
    sim: BlockSim, gids: np.ndarray, customer_ids: pa.Array, rng: np.random.Generator, start_us: int
) -> pa.Table:
    cu = sim.customers
    n = len(gids)
    idx = np.arange(n)
    # Version 1: free at signup. Subscribers before the window get a version at their billing anchor.
    pre_sub = (sim.sub[0] == 1) & (cu.signup_us < start_us)
    cust = np.concatenate([idx, idx[pre_sub], sim.ver_cust])
    valid = np.concatenate([cu.signup_us, sim.anchor[0][pre_sub], sim.ver_time])
    plan = np.concatenate([np.zeros(n, np.int8), sim.plan[0][pre_sub], sim.ver_plan])
    order = np.lexsort((valid, cust))
    cust, valid, plan = cust[order], valid[order], plan[order]
    emails, phones = _contact_details(gids, cu.region, rng)
    take = pa.array(cust)
    return pa.table(
        {
            "customer_id": pc.take(customer_ids, take),
            "valid_from": pa.array(valid, type=UTC_TS),
            "signup_at": pa.array(cu.signup_us[cust], type=UTC_TS),
            "region": pc.take(pa.array(m.REGIONS), pa.array(cu.region[cust].astype(np.int32))),
            "plan": pc.take(pa.array(m.PLANS), pa.array(plan.astype(np.int32))),
            "consent_email": pa.array(cu.consent_email[cust]),
            "consent_ads": pa.array(cu.consent_ads[cust]),
            "email": pc.take(pa.array(emails), take),
            "phone": pc.take(pa.array(phones), take),
        },
        schema=CUSTOMERS_SCHEMA,
    )


def generate(
    out_dir: str | Path,
    *,
    customers: int,
    days: int,
    seed: int = 0,
    start: datetime | None = None,
    cutoffs: Sequence[datetime] | None = None,
    progress: Callable[[int, int], None] | None = None,
    block_size: int = BLOCK_SIZE,
) -> SyntheticSummary:
    """Generate the synthetic data set into ``out_dir`` and return what was written.

    Args:
        out_dir: folder to write into (created if missing): ``events/part-*.parquet``, ``customers.parquet``,
            ``oracle.parquet`` and ``summary.json``. Existing event parts there are replaced.
        customers: number of customers (ids ``c0`` .. ``c{customers-1}``); about 12% of them sign up during
            the window (for a 90-day window), the rest before it.
        days: length of the window in days; the data covers ``[start, start + days)``.
        seed: everything is a deterministic function of ``(seed, customers, days, start, cutoffs)``.
        start: first day, a Monday 00:00 UTC (a naive datetime is taken as UTC). Default: the latest Monday
            that makes the data end at least 7 days before now; give it explicitly for reproducible files.
        cutoffs: the times at which the oracle is written; each must be a Monday 00:00 UTC at least 35 days
            after ``start`` with 30 days of data after it. Default: every such Monday (:func:`default_cutoffs`).
        progress: called as ``progress(done_customers, total_customers)`` after each block, e.g. for a Rich
            progress bar.
        block_size: customers simulated and written together (one events part each); bounds memory. The
            output depends on it, so keep the default for comparable data sets.

    Raises:
        ValueError: on a start that is not a Monday midnight or ends in the future, or an unusable cutoff.
    """
    t0 = time.perf_counter()
    if customers <= 0 or days < 7:
        raise ValueError("customers must be positive and days at least 7")
    now = datetime.now(UTC)
    start = _default_start(days, now) if start is None else as_utc(start)
    if start.weekday() != 0 or start != start.replace(hour=0, minute=0, second=0, microsecond=0):
        raise ValueError(
            f"start {start.isoformat()} must be a Monday 00:00 UTC (the model's weeks start then)"
        )
    end = start + timedelta(days=days)
    if end > now:
        raise ValueError(f"the data would end at {end.isoformat()}, after now; choose an earlier start")
    cutoff_list = default_cutoffs(start, days) if cutoffs is None else list(cutoffs)
    weeks = _cutoff_weeks(start, days, cutoff_list)

    out = Path(out_dir)
    events_dir = out / "events"
    events_dir.mkdir(parents=True, exist_ok=True)
    for old in events_dir.glob("part-*.parquet"):
        old.unlink()
    start_us = int(start.timestamp() * 1_000_000)
    end_us = start_us + days * m.DAY_US
    cal, promo = m.calendar(start, days)
    n_weeks = len(promo)
    cal_pad = np.concatenate([cal, np.zeros(n_weeks * 7 - days)])
    transitions = m.transition_tables(cal_pad, promo)
    prices = catalog_prices(seed)
    iso = [(start + timedelta(weeks=w)).isocalendar() for w in range(n_weeks)]
    names = campaign_ids([(i.year, i.week) for i in iso], promo)

    paths = {
        "events": events_dir,
        "customers": out / "customers.parquet",
        "oracle": out / "oracle.parquet",
        "summary": out / "summary.json",
    }
    n_events = n_dupes = n_late = 0
    action_names = pa.array([a for a, _ in ACTIONS])
    horizons = np.array([h for _, h in ACTIONS], np.int32)
    pending: Future[None] | None = None
    with (
        ThreadPoolExecutor(max_workers=1) as writer,
        pq.ParquetWriter(paths["customers"], CUSTOMERS_SCHEMA) as cust_writer,
        pq.ParquetWriter(paths["oracle"], ORACLE_SCHEMA) as oracle_writer,
    ):
        for block, lo in enumerate(range(0, customers, block_size)):
            n = min(block_size, customers - lo)
            rng = np.random.default_rng([seed, block])
            gids = np.arange(lo, lo + n)
            customer_ids = pc.binary_join_element_wise("c", pc.cast(pa.array(gids), pa.string()), "")
            sim = simulate_block(rng, n, start_us, days, cal, promo)
            ev = build_events(rng, sim, start_us=start_us, end_us=end_us, prices=prices, promo=promo)
            table, dupes, late = to_table(
                rng,
                ev,
                seed=seed,
                block=block,
                customer_ids=customer_ids,
                region=sim.customers.region,
                campaign_names=names,
                end_us=end_us,
            )
            # Parquet encoding releases the GIL: write this part while the next block is simulated.
            if pending is not None:
                pending.result()
            pending = writer.submit(write_events, table, events_dir / f"part-{block:05d}.parquet")
            n_events += table.num_rows
            n_dupes += dupes
            n_late += late
            del table
            cust_writer.write_table(_customers_table(sim, gids, customer_ids, rng, start_us))
            orc = oracle_block(
                sim,
                ev,
                cutoff_weeks=weeks,
                start_us=start_us,
                cal=cal_pad,
                promo=promo,
                transitions=transitions,
            )
            oracle_writer.write_table(
                pa.table(
                    {
                        "customer_id": pc.take(customer_ids, pa.array(orc.cust)),
                        "cutoff": pa.array(orc.cutoff, type=UTC_TS),
                        "action": pc.take(action_names, pa.array(orc.action.astype(np.int32))),
                        "horizon_days": pa.array(horizons[orc.action]),
                        "eligible": pa.array(orc.eligible),
                        "probability": pa.array(orc.probability, mask=~orc.eligible),
                        "label": pa.array(orc.label, mask=~orc.eligible),
                    },
                    schema=ORACLE_SCHEMA,
                )
            )
            if progress is not None:
                progress(lo + n, customers)
        if pending is not None:
            pending.result()

    summary = SyntheticSummary(
        customers=customers,
        days=days,
        events=n_events,
        duplicates=n_dupes,
        late_events=n_late,
        start=start,
        end=end,
        cutoffs=tuple(start + timedelta(weeks=w) for w in weeks),
        paths=paths,
        seconds=time.perf_counter() - t0,
    )
    paths["summary"].write_text(json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8")
    return summary
