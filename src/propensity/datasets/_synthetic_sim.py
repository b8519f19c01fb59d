"""Simulate one block of customers week by week: who is active on which day, sessions, campaigns, subscriptions.

The output is a set of flat numpy arrays (sessions, campaign contacts, subscription events, attribute versions and
the state at every week boundary); :mod:`._synthetic_events` turns them into event rows and
:mod:`._synthetic_oracle` computes the true probabilities from the recorded states.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from propensity.datasets import _synthetic_model as m

I64 = NDArray[np.int64]
I8 = NDArray[np.int8]
B = NDArray[np.bool_]

# Session kinds.
ORGANIC, CLICK, SIGNUP = 0, 1, 2
# Subscription event kinds (index into SUB_EVENT_TYPES).
SUB_EVENT_TYPES = ("subscription_start", "plan_upgrade", "renewal", "cancellation")

_INIT_LEVEL = np.array([0.40, 0.06, 0.06, 0.16, 0.16, 0.16])
_INIT_SINCE = np.array([0.12, 0.08, 0.07, 0.06, 0.67])
_INIT_PLAN = np.array([0.55, 0.30, 0.15])  # basic, plus, pro among existing subscribers
_DAY_START = 10 * m.MINUTE_US  # activity happens between 00:10 and 23:30 UTC, so nothing sits on a boundary
_DAY_SPAN = 23 * m.HOUR_US + 20 * m.MINUTE_US


@dataclass
class Customers:
    """Static attributes of a block's customers (index = position in the block)."""

    signup_us: I64
    region: I8
    consent_email: B
    consent_ads: B
    fav_category: I8
    device: I8


@dataclass
class BlockSim:
    customers: Customers
    # State at each week boundary w (row w): level, purchase recency, subscriber flag, plan, billing anchor (µs).
    level: NDArray[np.int8]
    since: NDArray[np.int8]
    sub: NDArray[np.int8]
    plan: NDArray[np.int8]
    anchor: I64
    # Sessions.
    sess_cust: I64
    sess_start: I64
    sess_kind: I8
    sess_purchase: B
    sess_campaign: NDArray[np.int32]  # week index of the campaign that brought the session, -1 if none
    # Campaign contacts (one per customer per wave sent).
    camp_cust: I64
    camp_week: NDArray[np.int32]
    camp_sent: I64
    camp_open: I64  # -1 when not opened
    camp_click: I64  # -1 when not clicked
    # Subscription events.
    subev_cust: I64
    subev_time: I64
    subev_kind: I8
    subev_plan: I8  # plan after the event (renewal: the plan renewed)
    # Plan changes during the window, for customers.parquet (initial versions are derived from the state).
    ver_cust: I64
    ver_time: I64
    ver_plan: I8


def _customers(rng: np.random.Generator, n: int, start_us: int, n_days: int) -> Customers:
    new_share = min(0.3, 0.12 * n_days / 90)
    new = rng.random(n) < new_share
    old_age_days = np.minimum(rng.exponential(365.0, n), 4 * 365) + 1
    new_day = rng.integers(0, n_days, n)
    tod = _DAY_START + rng.integers(0, 21 * m.HOUR_US, n)
    signup_day = np.where(new, new_day, -np.ceil(old_age_days).astype(np.int64))
    signup_us = start_us + signup_day * m.DAY_US + tod
    return Customers(
        signup_us=signup_us.astype(np.int64),
        region=rng.choice(len(m.REGIONS), n, p=m.REGION_WEIGHTS).astype(np.int8),
        consent_email=rng.random(n) < 0.7,
        consent_ads=rng.random(n) < 0.55,
        fav_category=rng.integers(0, 10, n).astype(np.int8),
        device=rng.choice(4, n, p=[0.35, 0.2, 0.3, 0.15]).astype(np.int8),
    )


def _first_true(mask: B) -> tuple[B, I64]:
    """Per row: whether any column is True, and the first such column."""
    return np.asarray(mask.any(axis=1)), mask.argmax(axis=1).astype(np.int64)


def simulate_block(
    rng: np.random.Generator, n: int, start_us: int, n_days: int, cal: NDArray[np.float64], promo: B
) -> BlockSim:
    """Run the weekly state machine for ``n`` customers over ``n_days`` days starting on a Monday."""
    cust = _customers(rng, n, start_us, n_days)
    n_weeks = -(-n_days // 7)
    cal_pad = np.concatenate([cal, np.zeros(n_weeks * 7 - n_days)])
    end_us = start_us + n_days * m.DAY_US
    idx = np.arange(n)

    existing = cust.signup_us < start_us
    level = np.where(existing, rng.choice(m.N_LEVELS, n, p=_INIT_LEVEL), 0).astype(np.int8)
    since = np.where(existing, rng.choice(m.N_RECENCY, n, p=_INIT_SINCE), m.N_RECENCY - 1).astype(np.int8)
    sub = (existing & (rng.random(n) < 0.2)).astype(np.int8)
    plan = np.where(sub == 1, 1 + rng.choice(3, n, p=_INIT_PLAN), 0).astype(np.int8)
    offset = _DAY_START + rng.integers(0, 30, n) * m.DAY_US + rng.integers(0, 23 * m.HOUR_US, n)
    anchor = start_us - offset - rng.integers(0, 13, n) * (m.CYCLE_DAYS * m.DAY_US)
    anchor = np.where(anchor > cust.signup_us, anchor, start_us - offset)
    anchor = np.where(anchor > cust.signup_us, anchor, (cust.signup_us + start_us) // 2)
    anchor = np.where(sub == 1, anchor, 0).astype(np.int64)

    hist_level = np.zeros((n_weeks + 1, n), np.int8)
    hist_since = np.zeros((n_weeks + 1, n), np.int8)
    hist_sub = np.zeros((n_weeks + 1, n), np.int8)
    hist_plan = np.zeros((n_weeks + 1, n), np.int8)
    hist_anchor = np.zeros((n_weeks + 1, n), np.int64)

    sessions: list[tuple[I64, I64, I8, B, NDArray[np.int32]]] = []
    camps: list[tuple[I64, NDArray[np.int32], I64, I64, I64]] = []
    subevs: list[tuple[I64, I64, I8, I8]] = []
    vers: list[tuple[I64, I64, I8]] = []

    def add_sub_events(rows: I64, times: I64, kind: int, plans: I8) -> None:
        subevs.append((rows, times, np.full(len(rows), kind, np.int8), plans.astype(np.int8)))

    cycle_us = m.CYCLE_DAYS * m.DAY_US
    for w in range(n_weeks):
        ws = start_us + w * 7 * m.DAY_US
        days = np.arange(7 * w, 7 * w + 7)
        valid_day = days < n_days
        new = (cust.signup_us >= ws) & (cust.signup_us < ws + 7 * m.DAY_US)
        level = np.where(new, 3, level).astype(np.int8)
        exists = cust.signup_us < ws
        hist_level[w], hist_since[w], hist_sub[w], hist_plan[w], hist_anchor[w] = (
            level,
            since,
            sub,
            plan,
            anchor,
        )

        tenure_days = np.maximum((ws - cust.signup_us) // m.DAY_US, 0)
        ten = m.tenure_bucket(tenure_days)
        a = m.active_prob(level, sub, ten, cust.region, cal_pad[7 * w : 7 * w + 7])
        signup_dow = np.where(new, (cust.signup_us - ws) // m.DAY_US, -1)
        # New customers: no organic activity up to and including the signup day (the signup session covers it).
        a = np.where(exists[:, None] | (new[:, None] & (np.arange(7)[None, :] > signup_dow[:, None])), a, 0.0)
        a = a * valid_day
        active = rng.random((n, 7)) < a

        # Campaign wave (Tuesday 09:00–11:00 UTC).
        send_us = ws + m.SEND_DAY * m.DAY_US + 9 * m.HOUR_US + rng.integers(0, 2 * m.HOUR_US, n)
        p_send, p_open, p_click, p_resp = m.campaign_probs(level, sub, cust.consent_email, bool(promo[w]))
        sent = (cust.signup_us < send_us) & (rng.random(n) < p_send) & bool(valid_day[m.SEND_DAY])
        opened = sent & (rng.random(n) < p_open)
        clicked = opened & (rng.random(n) < p_click)
        responded = clicked & (rng.random(n) < p_resp)
        open_us = send_us + rng.integers(5 * m.MINUTE_US, 6 * m.HOUR_US, n)
        click_us = open_us + rng.integers(30 * m.SECOND_US, 30 * m.MINUTE_US, n)
        s = np.flatnonzero(sent)
        camps.append(
            (
                s,
                np.full(len(s), w, np.int32),
                send_us[s],
                np.where(opened[s], open_us[s], -1),
                np.where(clicked[s], click_us[s], -1),
            )
        )
        c = np.flatnonzero(clicked)
        sessions.append(
            (
                c,
                click_us[c] + rng.integers(5 * m.SECOND_US, 20 * m.SECOND_US, len(c)),
                np.full(len(c), CLICK, np.int8),
                responded[c],
                np.full(len(c), w, np.int32),
            )
        )
        nw = np.flatnonzero(new)
        sessions.append(
            (
                nw,
                cust.signup_us[nw] + 30 * m.SECOND_US,
                np.full(len(nw), SIGNUP, np.int8),
                np.zeros(len(nw), bool),
                np.full(len(nw), -1, np.int32),
            )
        )

        # Organic sessions: 1–4 per active day, one per slot of the day so sessions are > 30 min apart.
        ci, di = np.nonzero(active)
        n_sess = 1 + np.minimum(rng.poisson(0.3, len(ci)), 3)
        buy_day = rng.random(len(ci)) < m.purchase_prob(level[ci], sub[ci], since[ci])
        rep = np.repeat(np.arange(len(ci)), n_sess)
        slot = np.arange(len(rep)) - np.repeat(np.cumsum(n_sess) - n_sess, n_sess)
        slot_len = _DAY_SPAN // n_sess[rep]
        st = (
            ws
            + di[rep] * m.DAY_US
            + _DAY_START
            + slot * slot_len
            + (rng.random(len(rep)) * (slot_len - 90 * m.MINUTE_US)).astype(np.int64)
        )
        is_last = slot == n_sess[rep] - 1
        sessions.append(
            (
                ci[rep],
                st,
                np.full(len(rep), ORGANIC, np.int8),
                buy_day[rep] & is_last,
                np.full(len(rep), -1, np.int32),
            )
        )
        first_start = st[slot == 0]  # aligned with (ci, di)

        # Subscription starts: free customers, during an organic session.
        p_subscribe = m.P_SUBSCRIBE_PER_ACTIVE_DAY[level[ci]] * (sub[ci] == 0)
        starts_sub = rng.random(len(ci)) < p_subscribe
        mask = np.zeros((n, 7), bool)
        mask[ci[starts_sub], di[starts_sub]] = True
        any_sub, sub_day = _first_true(mask)
        sub_time = np.zeros(n, np.int64)
        if any_sub.any():
            lookup = np.full((n, 7), -1, np.int64)
            lookup[ci, di] = first_start
            sub_time = lookup[idx, sub_day] + 45 * m.SECOND_US
        new_plan = (1 + (rng.random(n) < 0.2)).astype(np.int8)

        # Renewals and upgrades of this week's subscribers.
        is_sub = sub == 1
        k_cycle = np.where(is_sub, (ws - anchor) // cycle_us + 1, 0)
        renew_at = anchor + k_cycle * cycle_us
        renew_day = np.where(is_sub, (renew_at - start_us) // m.DAY_US, -(10**9))
        due = is_sub & (renew_at < ws + 7 * m.DAY_US) & (renew_at < end_us)
        renews = due & (rng.random(n) < m.renew_prob(level, k_cycle == 1))
        cancels = due & ~renews
        first_renew_day = np.where(is_sub, (anchor + cycle_us - start_us) // m.DAY_US, 10**9)
        allowed = (
            is_sub[:, None]
            & (days[None, :] > first_renew_day[:, None])
            & (days[None, :] != renew_day[:, None])
            & ~(cancels[:, None] & (days[None, :] > renew_day[:, None]))
            & valid_day[None, :]
        )
        hazard = m.UPGRADE_HAZARD[level] * m.UPGRADE_PLAN_MULT[plan]
        upgrade_mask = allowed & (rng.random((n, 7)) < (1.0 - np.exp(-hazard))[:, None])
        upgraded, up_day = _first_true(upgrade_mask)
        up_time = ws + up_day * m.DAY_US + _DAY_START + rng.integers(0, _DAY_SPAN, n)
        up_plan = np.minimum(plan + 1, 3).astype(np.int8)
        plan_at_renewal = np.where(upgraded & (ws // m.DAY_US + up_day < renew_at // m.DAY_US), up_plan, plan)

        r = np.flatnonzero(renews)
        add_sub_events(r, renew_at[r], 2, plan_at_renewal[r])
        r = np.flatnonzero(cancels)
        add_sub_events(r, renew_at[r], 3, np.zeros(len(r), np.int8))
        vers.append((r, renew_at[r], np.zeros(len(r), np.int8)))
        u = np.flatnonzero(upgraded)
        add_sub_events(u, up_time[u], 1, up_plan[u])
        vers.append((u, up_time[u], up_plan[u]))
        sb = np.flatnonzero(any_sub)
        add_sub_events(sb, sub_time[sb], 0, new_plan[sb])
        vers.append((sb, sub_time[sb], new_plan[sb]))

        # Next week's state.
        signup_active = np.zeros((n, 7), bool)
        signup_active[nw, signup_dow[nw]] = True
        click_active = np.zeros((n, 7), bool)
        click_active[c, m.SEND_DAY] = True
        k = (active | signup_active | click_active).sum(axis=1)
        level = np.where(exists | new, m.next_level(level, k), level).astype(np.int8)
        bought = responded | (np.bincount(ci[buy_day], minlength=n) > 0)
        since = np.where(exists | new, m.next_since(since, bought), since).astype(np.int8)
        plan = np.where(upgraded, up_plan, plan)
        plan = np.where(cancels, 0, plan)
        sub = np.where(cancels, 0, sub)
        plan = np.where(any_sub, new_plan, plan).astype(np.int8)
        anchor = np.where(any_sub, sub_time, anchor)
        sub = np.where(any_sub, 1, sub).astype(np.int8)

    hist_level[n_weeks], hist_since[n_weeks], hist_sub[n_weeks] = level, since, sub
    hist_plan[n_weeks], hist_anchor[n_weeks] = plan, anchor

    def cat(parts: list[tuple[NDArray[np.generic], ...]], i: int) -> NDArray[np.generic]:
        return np.concatenate([p[i] for p in parts])

    return BlockSim(
        customers=cust,
        level=hist_level,
        since=hist_since,
        sub=hist_sub,
        plan=hist_plan,
        anchor=hist_anchor,
        sess_cust=cat(sessions, 0).astype(np.int64),  # type: ignore[arg-type]
        sess_start=cat(sessions, 1).astype(np.int64),  # type: ignore[arg-type]
        sess_kind=cat(sessions, 2).astype(np.int8),  # type: ignore[arg-type]
        sess_purchase=cat(sessions, 3).astype(bool),  # type: ignore[arg-type]
        sess_campaign=cat(sessions, 4).astype(np.int32),  # type: ignore[arg-type]
        camp_cust=cat(camps, 0).astype(np.int64),  # type: ignore[arg-type]
        camp_week=cat(camps, 1).astype(np.int32),  # type: ignore[arg-type]
        camp_sent=cat(camps, 2).astype(np.int64),  # type: ignore[arg-type]
        camp_open=cat(camps, 3).astype(np.int64),  # type: ignore[arg-type]
        camp_click=cat(camps, 4).astype(np.int64),  # type: ignore[arg-type]
        subev_cust=cat(subevs, 0).astype(np.int64),  # type: ignore[arg-type]
        subev_time=cat(subevs, 1).astype(np.int64),  # type: ignore[arg-type]
        subev_kind=cat(subevs, 2).astype(np.int8),  # type: ignore[arg-type]
        subev_plan=cat(subevs, 3).astype(np.int8),  # type: ignore[arg-type]
        ver_cust=cat(vers, 0).astype(np.int64),  # type: ignore[arg-type]
        ver_time=cat(vers, 1).astype(np.int64),  # type: ignore[arg-type]
        ver_plan=cat(vers, 2).astype(np.int8),  # type: ignore[arg-type]
    )
