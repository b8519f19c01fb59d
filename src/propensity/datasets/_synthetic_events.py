"""Turn a simulated block into event rows: session funnels, campaign contacts, billing, refunds, support.

Everything is vectorised over rows; nothing here changes who does what (that was decided in
:mod:`._synthetic_sim`), only how it looks as events: times within sessions, skus, amounts, pages, devices, and
the ingestion artefacts (late arrivals and duplicate deliveries).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import NDArray

from propensity.core.event import STANDARD_EVENT_TYPES, UTC_TS
from propensity.datasets import _synthetic_model as m
from propensity.datasets._synthetic_sim import SUB_EVENT_TYPES, BlockSim

I64 = NDArray[np.int64]

CATEGORIES = (
    "electronics",
    "home",
    "fashion",
    "beauty",
    "sports",
    "toys",
    "books",
    "grocery",
    "garden",
    "pets",
)
SKUS_PER_CATEGORY = 20
N_SKUS = len(CATEGORIES) * SKUS_PER_CATEGORY
DEVICES = ("desktop", "mobile_web", "ios", "android")
CHANNELS = ("web", "app", "email", "billing", "support")
DEVICE_CHANNEL = np.array([0, 0, 1, 1], np.int8)
STATIC_PAGES = ("/", "/search", "/cart", "/checkout", "/checkout/complete", "/account")
PAGES = (
    *STATIC_PAGES,
    *(f"/c/{c}" for c in CATEGORIES),
    *(f"/p/SKU-{i:04d}" for i in range(N_SKUS)),
)
_CAT_PAGE0 = len(STATIC_PAGES)
_SKU_PAGE0 = _CAT_PAGE0 + len(CATEGORIES)
SKU_NAMES = tuple(f"SKU-{i:04d}" for i in range(N_SKUS))
SKU_CATEGORY = np.repeat(np.arange(len(CATEGORIES)), SKUS_PER_CATEGORY)

ETYPE = {name: i for i, name in enumerate(STANDARD_EVENT_TYPES)}
# The order of events within a session; counts per stage are drawn per session.
STAGES = (
    "page_view",
    "search",
    "product_view",
    "cart_add",
    "cart_remove",
    "checkout",
    "purchase",
    "coupon_redemption",
)
STAGE_TYPE = np.array([ETYPE[s] for s in STAGES], np.int8)
STAGE_PAGE = np.array([-1, 1, -1, 2, 2, 3, 4, 3], np.int16)  # -1: depends on the row
# Event types that may arrive late (tracked client-side or by partners). page_view, purchase, signup, billing
# and campaign_sent are always on time, so the state that drives the oracle is visible at every cutoff.
LATE_TYPES = np.array(
    [
        ETYPE[t]
        for t in (
            "product_view",
            "search",
            "cart_add",
            "cart_remove",
            "checkout",
            "refund",
            "coupon_redemption",
            "campaign_open",
            "campaign_click",
            "support_contact",
        )
    ]
)
# Deliverability feedback (appended after late arrival and duplication, from a generator of its own, so every
# other event is the same as without it): among customers sent campaigns, a hard bounce at the last send for
# some who did not engage with it (the provider stops sending to a bounced inbox), and a spam complaint or an
# unsubscribe after the last open or click for some who did. Nothing email-related follows any of them.
BOUNCE_RATE = 0.03
COMPLAINT_RATE = 0.005
UNSUBSCRIBE_RATE = 0.02
LATE_RATE = 0.025
DUPLICATE_RATE = 0.005
REFUND_RATE = 0.04
COUPON_DISCOUNT = 0.10

EVENT_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("event_id", pa.string()),
    ("customer_id", pa.string()),
    ("event_type", pa.string()),
    ("event_time", UTC_TS),
    ("available_at", UTC_TS),
    ("amount", pa.float64()),
    ("quantity", pa.float64()),
    ("currency", pa.string()),
    ("sku", pa.string()),
    ("category", pa.string()),
    ("campaign_id", pa.string()),
    ("channel", pa.string()),
    ("plan", pa.string()),
    ("device", pa.string()),
    ("page", pa.string()),
    ("campaign_type", pa.string()),
)
EVENTS_SCHEMA = pa.schema([pa.field(n, t) for n, t in EVENT_COLUMNS])


def type_mask(types: NDArray[np.integer] | list[int]) -> NDArray[np.bool_]:
    """A lookup table over event type codes: ``type_mask(types)[etype]`` is a fast ``isin``."""
    mask = np.zeros(len(STANDARD_EVENT_TYPES), bool)
    mask[np.asarray(types)] = True
    return mask


def catalog_prices(seed: int) -> NDArray[np.float64]:
    """Price (USD) of every sku: a category price level times a lognormal spread, fixed by the seed."""
    rng = np.random.default_rng([seed, 7_777])
    level = np.array([180.0, 45.0, 40.0, 25.0, 55.0, 30.0, 15.0, 8.0, 35.0, 20.0])
    return np.round(level[SKU_CATEGORY] * rng.lognormal(0.0, 0.45, N_SKUS), 2)


def campaign_ids(start_week_iso: list[tuple[int, int]], promo: NDArray[np.bool_]) -> list[str]:
    return [
        f"cmp-{y}w{wk:02d}-{'promo' if p else 'news'}"
        for (y, wk), p in zip(start_week_iso, promo, strict=True)
    ]


@dataclass
class EventRows:
    """Event rows of a block as parallel arrays (codes into the dictionaries above; -1 or NaN for null)."""

    cust: I64
    etype: NDArray[np.int8]
    time: I64
    amount: NDArray[np.float64]
    quantity: NDArray[np.float64]
    sku: NDArray[np.int16]
    campaign: NDArray[np.int32]
    channel: NDArray[np.int8]
    plan: NDArray[np.int8]
    device: NDArray[np.int8]
    page: NDArray[np.int16]

    @staticmethod
    def concat(parts: list[EventRows]) -> EventRows:
        return EventRows(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in EventRows.__dataclass_fields__)
        )

    @staticmethod
    def simple(
        cust: I64,
        etype: int,
        time: I64,
        *,
        channel: int,
        amount: NDArray[np.float64] | None = None,
        campaign: NDArray[np.int32] | None = None,
        plan: NDArray[np.int8] | None = None,
        device: NDArray[np.int8] | None = None,
    ) -> EventRows:
        k = len(cust)
        return EventRows(
            cust=cust.astype(np.int64),
            etype=np.full(k, etype, np.int8),
            time=time.astype(np.int64),
            amount=np.full(k, np.nan) if amount is None else amount,
            quantity=np.full(k, np.nan),
            sku=np.full(k, -1, np.int16),
            campaign=np.full(k, -1, np.int32) if campaign is None else campaign,
            channel=np.full(k, channel, np.int8),
            plan=np.full(k, -1, np.int8) if plan is None else plan,
            device=np.full(k, -1, np.int8) if device is None else device,
            page=np.full(k, -1, np.int16),
        )


def _session_events(
    rng: np.random.Generator, sim: BlockSim, prices: NDArray[np.float64], promo: NDArray[np.bool_]
) -> EventRows:
    cust = sim.sess_cust
    s = len(cust)
    buy = sim.sess_purchase
    organic = sim.sess_kind == 0
    n_pv = 1 + rng.poisson(0.8, s)
    n_search = (organic & (rng.random(s) < 0.25)).astype(np.int64)
    browse = rng.random(s) < 0.55
    n_prod = np.where(buy, 1 + rng.poisson(0.7, s), browse * (1 + rng.poisson(0.5, s)))
    cart = buy | ((n_prod > 0) & (rng.random(s) < 0.3))
    cart_rm = ~buy & cart & (rng.random(s) < 0.2)
    checkout = buy | (cart & ~cart_rm & (rng.random(s) < 0.3))
    coupon = buy & (sim.sess_campaign >= 0) & promo[np.maximum(sim.sess_campaign, 0)]
    counts = np.stack([n_pv, n_search, n_prod, cart, cart_rm, checkout, buy, coupon], axis=1).astype(np.int64)
    total = counts.sum(axis=1)
    rep = np.repeat(np.arange(s), total)
    pos = np.arange(len(rep)) - np.repeat(np.cumsum(total) - total, total)
    stage = np.repeat(np.tile(np.arange(len(STAGES), dtype=np.int8), s), counts.ravel())
    previous = np.concatenate([np.array([-1], np.int8), stage[:-1]])
    later_view = (stage == 2) & (previous == 2)  # not the session's first product view

    fav = sim.customers.fav_category[cust]
    cat = np.where(rng.random(s) < 0.7, fav, rng.integers(0, len(CATEGORIES), s))
    sess_sku = cat * SKUS_PER_CATEGORY + rng.integers(0, SKUS_PER_CATEGORY, s)
    qty = 1 + rng.poisson(0.3, s)
    ev_cat = cat[rep]
    other_sku = ev_cat * SKUS_PER_CATEGORY + rng.integers(0, SKUS_PER_CATEGORY, len(rep))
    is_prod_stage = (stage >= 2) & (stage != 7)
    sku = np.where(is_prod_stage, np.where(later_view, other_sku, sess_sku[rep]), -1)

    region = sim.customers.region[cust[rep]]
    is_buy = stage == 6
    value = prices[np.maximum(sku, 0)] * qty[rep] * m.REGION_FX[region]
    discount = np.where(coupon[rep], 1.0 - COUPON_DISCOUNT, 1.0)
    amount = np.where(is_buy, np.round(value * discount, 2), np.nan)
    # The redemption carries the discount granted, on the order's sku.
    sku = np.where(stage == 7, sess_sku[rep], sku)
    amount = np.where(
        stage == 7,
        np.round(prices[sess_sku[rep]] * qty[rep] * m.REGION_FX[region] * COUPON_DISCOUNT, 2),
        amount,
    )
    quantity = np.where(is_buy | (stage == 3) | (stage == 7), qty[rep].astype(np.float64), np.nan)

    rnd_page = rng.integers(0, len(CATEGORIES) + N_SKUS, len(rep))
    pv_page = np.where(
        pos == 0,
        np.where(rng.random(len(rep)) < 0.5, 0, _CAT_PAGE0 + ev_cat),
        _CAT_PAGE0 + rnd_page,
    )
    page = np.where(stage == 0, pv_page, STAGE_PAGE[stage])
    page = np.where(stage == 2, _SKU_PAGE0 + sku, page)

    device = sim.customers.device[cust]
    # One in five sessions comes from another device than the usual one.
    device = np.where(rng.random(s) < 0.2, rng.integers(0, len(DEVICES), s), device).astype(np.int8)
    time = sim.sess_start[rep] + pos * 90 * m.SECOND_US + rng.integers(0, 60 * m.SECOND_US, len(rep))
    return EventRows(
        cust=cust[rep],
        etype=STAGE_TYPE[stage],
        time=time,
        amount=amount,
        quantity=quantity,
        sku=sku.astype(np.int16),
        campaign=sim.sess_campaign[rep],
        channel=DEVICE_CHANNEL[device[rep]],
        plan=np.full(len(rep), -1, np.int8),
        device=device[rep],
        page=page.astype(np.int16),
    )


def build_events(
    rng: np.random.Generator,
    sim: BlockSim,
    *,
    start_us: int,
    end_us: int,
    prices: NDArray[np.float64],
    promo: NDArray[np.bool_],
) -> EventRows:
    """All events of a block (before late arrival and duplication), unsorted."""
    cust = sim.customers
    parts = [_session_events(rng, sim, prices, promo)]
    camp = sim.camp_week
    parts.append(
        EventRows.simple(sim.camp_cust, ETYPE["campaign_sent"], sim.camp_sent, channel=2, campaign=camp)
    )
    o = sim.camp_open >= 0
    parts.append(
        EventRows.simple(
            sim.camp_cust[o], ETYPE["campaign_open"], sim.camp_open[o], channel=2, campaign=camp[o]
        )
    )
    c = sim.camp_click >= 0
    parts.append(
        EventRows.simple(
            sim.camp_cust[c], ETYPE["campaign_click"], sim.camp_click[c], channel=2, campaign=camp[c]
        )
    )
    new = np.flatnonzero((cust.signup_us >= start_us) & (cust.signup_us < end_us))
    parts.append(
        EventRows.simple(
            new,
            ETYPE["signup"],
            cust.signup_us[new],
            channel=0,
            plan=np.zeros(len(new), np.int8),
            device=cust.device[new],
        )
    )
    kinds = np.array([ETYPE[t] for t in SUB_EVENT_TYPES], np.int8)
    price = m.PLAN_PRICE[sim.subev_plan] * m.REGION_FX[cust.region[sim.subev_cust]]
    billed = (sim.subev_kind == 0) | (sim.subev_kind == 2)
    subev = EventRows.simple(
        sim.subev_cust,
        0,
        sim.subev_time,
        channel=3,
        amount=np.where(billed, np.round(price, 2), np.nan),
        plan=sim.subev_plan,
    )
    subev.etype = kinds[sim.subev_kind]
    subev.channel = np.where(sim.subev_kind <= 1, 0, 3).astype(np.int8)
    parts.append(subev)

    # Refunds of a few purchases, 1–10 days later (when still inside the window).
    sess = parts[0]
    buys = np.flatnonzero((sess.etype == ETYPE["purchase"]) & (rng.random(len(sess.etype)) < REFUND_RATE))
    r_time = sess.time[buys] + rng.integers(1 * m.DAY_US, 10 * m.DAY_US, len(buys))
    keep = r_time < end_us
    buys, r_time = buys[keep], r_time[keep]
    refund = EventRows.simple(sess.cust[buys], ETYPE["refund"], r_time, channel=4, amount=-sess.amount[buys])
    refund.sku, refund.quantity = sess.sku[buys], sess.quantity[buys]
    parts.append(refund)

    # Support contacts: rare, independent of everything else.
    n = len(cust.signup_us)
    first_us = np.maximum(cust.signup_us, start_us)
    n_contacts = rng.poisson(0.0015 * np.maximum(end_us - first_us, 0) / m.DAY_US)
    who = np.repeat(np.arange(n), n_contacts)
    when = first_us[who] + (rng.random(len(who)) * (end_us - first_us[who] - m.HOUR_US)).astype(np.int64)
    parts.append(EventRows.simple(who, ETYPE["support_contact"], when, channel=4))
    return EventRows.concat(parts)


def _strings(codes: NDArray[np.integer], names: pa.Array) -> pa.Array:
    """A dictionary-encoded string column (-1 = null). Written with ``store_schema=False`` it reads back as
    plain ``string``; encoding here saves materialising millions of strings only for Parquet to re-encode them."""
    idx = pa.array(codes.astype(np.int32), mask=codes < 0)
    return pa.DictionaryArray.from_arrays(idx, names)


def deliverability_events(rng: np.random.Generator, ev: EventRows, end_us: int) -> EventRows:
    """Bounces, spam complaints and unsubscribes for a block's events (see ``BOUNCE_RATE``)."""
    sent_t, open_t, click_t = (ETYPE[t] for t in ("campaign_sent", "campaign_open", "campaign_click"))
    email = np.flatnonzero((ev.etype == sent_t) | (ev.etype == open_t) | (ev.etype == click_t))
    if len(email) == 0:
        return EventRows.simple(np.zeros(0, np.int64), 0, np.zeros(0, np.int64), channel=2)
    # Each customer's last email event (ties: the latest row) and last send.
    order = email[np.lexsort((email, ev.time[email], ev.cust[email]))]
    last = order[np.r_[ev.cust[order][1:] != ev.cust[order][:-1], True]]
    draw = rng.random(len(last))
    engaged = ev.etype[last] != sent_t
    bounce = last[~engaged & (draw < BOUNCE_RATE)]
    complain = last[engaged & (draw < COMPLAINT_RATE)]
    unsub = last[engaged & (draw >= COMPLAINT_RATE) & (draw < COMPLAINT_RATE + UNSUBSCRIBE_RATE)]
    # Not engaged: the customer's last email event is a send, and the bounce follows it.
    parts = []
    for rows, kind, lo, hi in (
        (bounce, "email_bounce", m.SECOND_US, 5 * 60 * m.SECOND_US),
        (complain, "spam_complaint", 60 * m.SECOND_US, 2 * m.HOUR_US),
        (unsub, "unsubscribe", 60 * m.SECOND_US, 2 * m.HOUR_US),
    ):
        when = ev.time[rows] + rng.integers(lo, hi, len(rows))
        keep = when < end_us
        parts.append(
            EventRows.simple(
                ev.cust[rows][keep], ETYPE[kind], when[keep], channel=2, campaign=ev.campaign[rows][keep]
            )
        )
    return EventRows.concat(parts)


def to_table(
    rng: np.random.Generator,
    ev: EventRows,
    *,
    seed: int,
    block: int,
    customer_ids: pa.Array,
    region: NDArray[np.int8],
    campaign_names: list[str],
    end_us: int | None = None,
) -> tuple[pa.Table, int, int]:
    """Sort by event time, add availability, ids, duplicates and (with ``end_us``, the window's end)
    deliverability feedback; return (table, n_duplicates, n_late)."""
    order = np.argsort(ev.time, kind="stable")
    ev = EventRows(*(getattr(ev, f)[order] for f in EventRows.__dataclass_fields__))
    k = len(ev.time)
    lateable = type_mask(LATE_TYPES)[ev.etype]
    late = lateable & (rng.random(k) < LATE_RATE)
    delay = np.clip(np.exp(rng.normal(np.log(10 * m.HOUR_US), 1.0, k)), m.HOUR_US, 5 * m.DAY_US).astype(
        np.int64
    )
    available = ev.time + np.where(late, delay, rng.integers(0, 3 * m.SECOND_US, k))
    # Duplicate deliveries: exact repeats of a row (same event_id), right after the original.
    dup = np.flatnonzero(rng.random(k) < DUPLICATE_RATE)
    take = np.sort(np.concatenate([np.arange(k), dup]), kind="stable")
    ev = EventRows(*(getattr(ev, f)[take] for f in EventRows.__dataclass_fields__))
    available = available[take]
    # Ids carry the seed, so data sets generated with different seeds never share an event_id.
    ids = pc.binary_join_element_wise(f"e{seed}-{block}-", pc.cast(pa.array(take), pa.string()), "")
    if end_us is not None:
        # A generator of its own (seeded by seed and block): every other event stays as it was.
        extra = deliverability_events(np.random.default_rng([seed, block, 0xDE11]), ev, end_us)
        if len(extra.time):
            n_extra = len(extra.time)
            extra_ids = pc.binary_join_element_wise(
                f"e{seed}-{block}-d", pc.cast(pa.array(np.arange(n_extra)), pa.string()), ""
            )
            both = EventRows.concat([ev, extra])
            order = np.argsort(both.time, kind="stable")
            ev = EventRows(*(getattr(both, f)[order] for f in EventRows.__dataclass_fields__))
            available = np.concatenate([available, extra.time + (extra.time % (3 * m.SECOND_US))])[order]
            ids = pa.concat_arrays([ids, extra_ids]).take(pa.array(order))

    no_amount = np.isnan(ev.amount)
    currency = np.where(no_amount, -1, region[ev.cust])
    sku_cat = np.where(ev.sku >= 0, SKU_CATEGORY[np.maximum(ev.sku, 0)], -1)
    columns = {
        "event_id": ids,
        "customer_id": pc.take(customer_ids, pa.array(ev.cust)),
        "event_type": _strings(ev.etype, pa.array(STANDARD_EVENT_TYPES)),
        "event_time": pa.array(ev.time, type=UTC_TS),
        "available_at": pa.array(available, type=UTC_TS),
        "amount": pa.array(ev.amount, mask=no_amount),
        "quantity": pa.array(ev.quantity, mask=np.isnan(ev.quantity)),
        "currency": _strings(currency, pa.array(m.REGION_CURRENCY)),
        "sku": _strings(ev.sku, pa.array(SKU_NAMES)),
        "category": _strings(sku_cat, pa.array(CATEGORIES)),
        "campaign_id": _strings(ev.campaign, pa.array(campaign_names)),
        "channel": _strings(ev.channel, pa.array(CHANNELS)),
        "plan": _strings(ev.plan, pa.array(m.PLANS)),
        "device": _strings(ev.device, pa.array(DEVICES)),
        "page": _strings(ev.page, pa.array(PAGES)),
        # What a CRM knows of every campaign it sends: its kind (kept by the ingester as a JSON property).
        "campaign_type": _strings(
            ev.campaign, pa.array(["promo" if n.endswith("-promo") else "newsletter" for n in campaign_names])
        ),
    }
    return pa.table(columns), len(dup), int(late.sum())


def write_events(table: pa.Table, path: str | Path) -> None:
    """Write one events part. The Arrow schema is not stored, so dictionary columns read back as ``string``."""
    pq.write_table(table, path, compression="zstd", store_schema=False)
