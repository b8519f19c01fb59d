"""The generative model behind the synthetic data set: its parameters, the weekly state machine and the oracle.

Everything a customer does in week ``w`` is drawn from rates that are fixed at the start of that week (Monday
00:00 UTC) from the customer's *state*, and the state is a function of what the events and attributes show by
then. So the probability of any label over a horizon that starts on a week boundary can be computed exactly:
one week ahead in closed form, several weeks ahead by carrying a distribution over the 30 chain states
(engagement level × purchase recency) through per-week transition matrices. ``docs/synthetic-data.md``
tells the same story in prose.

State at a week boundary (all observable at that instant):

* engagement level ``L`` in 0..5, from the number of distinct UTC days with a ``page_view`` in the last three
  weeks (see :func:`next_level`);
* purchase recency in 0..4: whole weeks since the last ``purchase``, 4 when none in the last four weeks;
* subscriber flag and plan (``customers.parquet`` as of the boundary), billing anchor (the last
  ``subscription_start``), whether the customer is still in the first billing cycle;
* tenure bucket (from ``signup_at``), region, email consent;
* the calendar: day of week, season, and the campaign calendar (a wave every Tuesday, promotions in even ISO
  weeks, newsletters in odd ones).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
Ints = NDArray[np.integer[Any]]

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
MINUTE_US = 60_000_000
SECOND_US = 1_000_000
CYCLE_DAYS = 30  # billing cycle of every paid plan
N_LEVELS = 6
LEVEL_NAMES = ("dormant", "lapsed_2w", "lapsed_1w", "light", "regular", "heavy")

# Daily activity intensity by engagement level: P(active on a day) = 1 - exp(-rate * multipliers).
BASE_RATE = np.array([0.012, 0.035, 0.07, 0.17, 0.40, 0.95])
SUB_MULT = np.array([1.0, 1.25])  # free, paying subscriber
TENURE_MULT = np.array([1.25, 1.0, 0.85])  # < 28 days, 28..181 days, >= 182 days since signup
TENURE_EDGES_DAYS = (28, 182)
REGIONS = ("NA", "EU", "UK", "APAC")
REGION_WEIGHTS = np.array([0.40, 0.30, 0.15, 0.15])
REGION_MULT = np.array([1.10, 1.0, 0.95, 0.85])
REGION_CURRENCY = ("USD", "EUR", "GBP", "AUD")
REGION_FX = np.array([1.0, 0.92, 0.79, 1.52])
REGION_PHONE = ("+1", "+49", "+44", "+61")
DOW_MULT = np.array([0.95, 0.90, 0.90, 0.95, 1.05, 1.15, 1.10])  # Monday .. Sunday

# P(at least one purchase on an active day), by level, times the subscriber multiplier.
PURCHASE_PER_ACTIVE_DAY = np.array([0.05, 0.07, 0.08, 0.10, 0.12, 0.14])
PURCHASE_SUB_MULT = np.array([1.0, 1.4])
# Purchase recency ("since"): 0 = bought last week, 1..3 = two..four weeks ago, 4 = not in the last four weeks.
# Recent buyers buy again more readily.
N_RECENCY = 5
PURCHASE_RECENCY_MULT = np.array([1.7, 1.4, 1.2, 1.05, 0.8])
N_STATES = N_LEVELS * N_RECENCY  # the chain carried by the oracle: level × purchase recency

# Campaigns: one wave every Tuesday. P(sent | consent) by [promo?][level]; promotions favour lapsed customers.
SEND_DAY = 1  # Tuesday
P_SEND = np.array(
    [
        [0.45, 0.45, 0.45, 0.45, 0.45, 0.45],  # newsletter
        [0.60, 0.55, 0.55, 0.35, 0.30, 0.30],  # promotion
    ]
)
P_OPEN = np.array([0.10, 0.15, 0.20, 0.28, 0.36, 0.45])
P_CLICK_GIVEN_OPEN = np.array([0.18, 0.35])  # newsletter, promotion
P_RESPOND_GIVEN_CLICK = np.array([0.12, 0.18, 0.25, 0.32, 0.40, 0.48])
RESPOND_SUB_MULT = np.array([1.0, 1.2])
RESPOND_TYPE_MULT = np.array([0.6, 1.0])

# Subscriptions.
PLANS = ("free", "basic", "plus", "pro")
PLAN_PRICE = np.array([0.0, 9.99, 19.99, 39.99])
P_SUBSCRIBE_PER_ACTIVE_DAY = np.array([0.002, 0.002, 0.003, 0.003, 0.004, 0.006])
UPGRADE_HAZARD = np.array([0.0006, 0.0012, 0.0018, 0.0035, 0.0060, 0.0095])  # per day, basic plan
UPGRADE_PLAN_MULT = np.array([0.0, 1.0, 0.6, 0.0])  # pro has nowhere to go
RENEW = np.array([0.70, 0.78, 0.84, 0.92, 0.95, 0.97])
FIRST_CYCLE_CANCEL_MULT = 1.6  # first renewals are shakier: P(cancel) is this much higher

# Composite key of everything besides the level that moves the weekly transition: sub, tenure, region, consent.
N_KEYS = 2 * 3 * len(REGIONS) * 2


def decay(level: Ints) -> NDArray[np.int8]:
    """The level after a week without activity: an active level falls to ``lapsed_1w``, then one step a week."""
    return np.where(level >= 3, 2, np.maximum(level - 1, 0)).astype(np.int8)


def next_level(level: Ints, active_days: NDArray[np.int64]) -> NDArray[np.int8]:
    """Next week's level from this week's level and number of active days (distinct days with a page_view).

    1 active day → light (3), 2–3 → regular (4), 4+ → heavy (5); none → :func:`decay`. Equivalently, at any
    week boundary: the bucket of last week's active days if any; else 2 if the week before had activity, 1 if
    the one before that did, 0 otherwise. Three weeks of history therefore fix the level exactly.
    """
    bucket = np.where(active_days == 1, 3, np.where(active_days <= 3, 4, 5))
    return np.where(active_days == 0, decay(level), bucket).astype(np.int8)


def next_since(since: Ints, bought: NDArray[np.bool_]) -> NDArray[np.int8]:
    """Purchase recency next week: 0 after a week with a purchase, else one more week, capped at 4."""
    return np.where(bought, 0, np.minimum(since + 1, N_RECENCY - 1)).astype(np.int8)


def purchase_prob(level: Ints, sub: Ints, since: Ints) -> F64:
    """P(a purchase on an active day): by level, subscriber and purchase recency."""
    return np.minimum(
        PURCHASE_PER_ACTIVE_DAY[level] * PURCHASE_SUB_MULT[sub] * PURCHASE_RECENCY_MULT[since], 1.0
    )


def tenure_bucket(days_since_signup: NDArray[np.int64]) -> NDArray[np.int8]:
    return np.searchsorted(np.array(TENURE_EDGES_DAYS), days_since_signup, side="right").astype(np.int8)


def state_key(sub: Ints, tenure: Ints, region: Ints, consent: NDArray[np.bool_]) -> I64:
    return ((sub.astype(np.int64) * 3 + tenure) * len(REGIONS) + region) * 2 + consent.astype(np.int64)


def calendar(start: datetime, n_days: int) -> tuple[F64, NDArray[np.bool_]]:
    """Daily calendar multiplier (day of week × season) and, per week, whether its campaign is a promotion.

    Season: a smooth annual cycle peaking in late December plus a short late-November (Black Friday) bump.
    """
    days = np.arange(n_days)
    doy = np.array([(start + timedelta(days=int(d))).timetuple().tm_yday for d in days], dtype=np.float64)
    season = (
        1.0 + 0.15 * np.cos(2 * np.pi * (doy - 355) / 365.25) + 0.25 * np.exp(-(((doy - 330) / 5.0) ** 2))
    )
    dow = DOW_MULT[(days + start.weekday()) % 7]
    n_weeks = -(-n_days // 7)
    promo = np.array([(start + timedelta(weeks=w)).isocalendar().week % 2 == 0 for w in range(n_weeks)])
    return dow * season, promo


def campaign_probs(
    level: Ints,
    sub: Ints,
    consent: NDArray[np.bool_],
    promo: bool | NDArray[np.bool_],
) -> tuple[F64, F64, F64, F64]:
    """(P(sent), P(open | sent), P(click | open), P(purchase response | click)) for a week's wave."""
    p = np.asarray(promo, dtype=np.int64)
    send = P_SEND[p, level] * consent
    opened = P_OPEN[level]
    click = P_CLICK_GIVEN_OPEN[p] * np.ones_like(opened)
    respond = np.minimum(P_RESPOND_GIVEN_CLICK[level] * RESPOND_SUB_MULT[sub] * RESPOND_TYPE_MULT[p], 0.95)
    return send, opened, click, respond


def active_prob(
    level: Ints,
    sub: Ints,
    tenure: Ints,
    region: Ints,
    cal_days: F64,
) -> F64:
    """P(active) for each customer (rows) on each of the given days (columns), rates fixed for the week."""
    rate = BASE_RATE[level] * SUB_MULT[sub] * TENURE_MULT[tenure] * REGION_MULT[region]
    return 1.0 - np.exp(-rate[..., None] * cal_days)


def renew_prob(level: Ints, first_cycle: NDArray[np.bool_]) -> F64:
    cancel = 1.0 - RENEW[level]
    return 1.0 - np.where(first_cycle, np.minimum(cancel * FIRST_CYCLE_CANCEL_MULT, 1.0), cancel)


def _week_distribution(idle: F64, browse: F64, buy: F64) -> F64:
    """Joint distribution of (active days 0..7, any purchase 0/1) over a week of independent days.

    Per day: ``idle`` (not active), ``browse`` (active, no purchase), ``buy`` (active with a purchase); each
    ``[..., 7]``. Returns ``[..., 8, 2]``.
    """
    dist = np.zeros((*idle.shape[:-1], idle.shape[-1] + 1, 2))
    dist[..., 0, 0] = 1.0
    for d in range(idle.shape[-1]):
        i, b, y = (x[..., d, None, None] for x in (idle, browse, buy))
        shifted = np.zeros_like(dist)
        shifted[..., 1:, :] = dist[..., :-1, :]
        bought = shifted.sum(axis=-1)
        new = dist * i + shifted * b
        new[..., 1] += (bought * y[..., 0])[..., :]
        dist = new
    return dist


def transition_tables(cal: F64, promo: NDArray[np.bool_]) -> F64:
    """``T[w, key, s, s']``: P(chain state s' next week | state s this week, state key) for every whole week.

    The chain state is ``s = level * N_RECENCY + since``. The week's active days are the organic ones plus, when
    the customer clicks the week's campaign, the send day (the click opens a session, which converts with the
    response probability); the mixture over the click is exact.
    """
    n_weeks = len(cal) // 7
    out = np.zeros((n_weeks, N_KEYS, N_STATES, N_STATES))
    grid = np.meshgrid(
        np.arange(2),
        np.arange(3),
        np.arange(len(REGIONS)),
        np.arange(2),
        np.arange(N_LEVELS),
        np.arange(N_RECENCY),
        indexing="ij",
    )
    sub, ten, reg, con, lev, since = (x.ravel().astype(np.int8) for x in grid)
    keys = state_key(sub, ten, reg, con.astype(bool))
    state = lev.astype(np.int64) * N_RECENCY + since
    k = np.arange(8)
    nxt_level = next_level(np.repeat(lev[:, None], 8, axis=1), np.broadcast_to(k, (len(lev), 8)))
    for w in range(n_weeks):
        a = active_prob(lev, sub, ten, reg, cal[7 * w : 7 * w + 7])
        pi = purchase_prob(lev, sub, since)[:, None]
        send, opened, click, respond = campaign_probs(lev, sub, con.astype(bool), bool(promo[w]))
        p_click = send * opened * click
        plain = _week_distribution(1 - a, a * (1 - pi), a * pi)
        idle, buy = 1 - a, a * pi
        idle[:, SEND_DAY] = 0.0
        buy[:, SEND_DAY] = 1 - (1 - buy[:, SEND_DAY]) * (1 - respond)
        forced = _week_distribution(idle, 1 - idle - buy, buy)
        dist = (1 - p_click)[:, None, None] * plain + p_click[:, None, None] * forced
        for bought in (0, 1):
            nxt_since = next_since(since, np.full(len(since), bool(bought)))
            target = nxt_level.astype(np.int64) * N_RECENCY + nxt_since[:, None]
            for kk in range(8):
                np.add.at(out[w], (keys, state, target[:, kk]), dist[:, kk, bought])
    return out
