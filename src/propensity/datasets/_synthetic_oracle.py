"""The oracle: each customer's true probability of each action as of a cutoff, and the realised label.

Probabilities come from the model (:mod:`._synthetic_model`) and the state recorded at the cutoff; labels come
from the generated events with the same definitions a label builder uses (``docs/synthetic-data.md``). The two
are computed independently, which is what lets the tests check that the probabilities are calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from propensity.datasets import _synthetic_model as m
from propensity.datasets._synthetic_events import ETYPE, EventRows, type_mask
from propensity.datasets._synthetic_sim import BlockSim

I64 = NDArray[np.int64]
F64 = NDArray[np.float64]

ACTIONS: tuple[tuple[str, int], ...] = (
    ("buy_7d", 7),
    ("upgrade_30d", 30),
    ("renew_30d", 30),
    ("respond_7d", 7),
    ("churn_30d", 30),
)
ACTION_CODE = {name: i for i, (name, _) in enumerate(ACTIONS)}
# Qualifying activity for churn: everything a customer does on the site or app. Billing, refunds, support
# contacts and email opens are not engagement. Every one of these happens inside a session with a page_view.
QUALIFYING = np.array(
    [
        ETYPE[t]
        for t in (
            "page_view",
            "product_view",
            "search",
            "cart_add",
            "cart_remove",
            "checkout",
            "purchase",
            "coupon_redemption",
            "campaign_click",
        )
    ]
)
_CHURN_WEEK_DAYS = (7, 7, 7, 7, 2)  # 30 days from a Monday


@dataclass
class OracleRows:
    cust: I64
    cutoff: I64
    action: NDArray[np.int8]
    eligible: NDArray[np.bool_]
    probability: F64  # NaN where not eligible
    label: NDArray[np.int8]  # -1 where not eligible

    @staticmethod
    def concat(parts: list[OracleRows]) -> OracleRows:
        return OracleRows(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in OracleRows.__dataclass_fields__)
        )


def _any_in_window(
    ev: EventRows, types: NDArray[np.int8] | list[int], lo: int, hi: int, n: int
) -> NDArray[np.bool_]:
    """Per customer: is there an event of one of ``types`` with lo < event_time <= hi?"""
    mask = type_mask(types)[ev.etype] & (ev.time > lo) & (ev.time <= hi)
    return np.bincount(ev.cust[mask], minlength=n) > 0


def _rows(
    cust: I64, t: int | I64, action: str, eligible: NDArray[np.bool_], prob: F64, label: NDArray[np.bool_]
) -> OracleRows:
    k = len(cust)
    return OracleRows(
        cust=cust,
        cutoff=np.broadcast_to(np.asarray(t, np.int64), (k,)).copy(),
        action=np.full(k, ACTION_CODE[action], np.int8),
        eligible=eligible,
        probability=np.where(eligible, np.clip(prob, 0.0, 1.0), np.nan),
        label=np.where(eligible, label.astype(np.int8), -1).astype(np.int8),
    )


def oracle_block(
    sim: BlockSim,
    ev: EventRows,
    *,
    cutoff_weeks: list[int],
    start_us: int,
    cal: F64,
    promo: NDArray[np.bool_],
    transitions: F64,
) -> OracleRows:
    cu = sim.customers
    n = len(cu.signup_us)
    day = m.DAY_US
    cycle = m.CYCLE_DAYS * day
    out: list[OracleRows] = []
    for b in cutoff_weeks:
        t = start_us + 7 * b * day
        idx = np.flatnonzero(cu.signup_us < t)
        lev, since = sim.level[b][idx], sim.since[b][idx]
        sub, plan, anchor = sim.sub[b][idx], sim.plan[b][idx], sim.anchor[b][idx]
        reg, consent = cu.region[idx], cu.consent_email[idx]
        tenure = [m.tenure_bucket((t + 7 * j * day - cu.signup_us[idx]) // day) for j in range(5)]

        # buy_7d: one week with rates fixed at the cutoff; closed form.
        a = m.active_prob(lev, sub, tenure[0], reg, cal[7 * b : 7 * b + 7])
        pi = m.purchase_prob(lev, sub, since)
        send, opened, click, resp = m.campaign_probs(lev, sub, consent, bool(promo[b]))
        p_buy = 1.0 - np.prod(1.0 - a * pi[:, None], axis=1) * (1.0 - send * opened * click * resp)
        bought = _any_in_window(ev, [ETYPE["purchase"]], t, t + 7 * day, n)[idx]
        out.append(_rows(idx, t, "buy_7d", np.ones(len(idx), bool), p_buy, bought))

        # churn_30d: no activity means the level follows its decay path, so the probability is a product.
        path = [lev]
        for _ in range(4):
            path.append(m.decay(path[-1]))
        none = {}
        for s in (0, 1):
            cols = []
            for j, nd in enumerate(_CHURN_WEEK_DAYS):
                w = b + j
                s_arr = np.full(len(idx), s, np.int8)
                aj = m.active_prob(path[j], s_arr, tenure[j], reg, cal[7 * w : 7 * w + nd])
                sj, oj, cj, _ = m.campaign_probs(path[j], s_arr, consent, bool(promo[w]))
                p_click = sj * oj * cj * (nd > m.SEND_DAY)
                cols.append(np.prod(1.0 - aj, axis=1) * (1.0 - p_click))
            none[s] = np.stack(cols, axis=1)
        is_sub = sub == 1
        k_cycle = np.where(is_sub, (t - anchor) // cycle + 1, 1)
        renew_at = anchor + k_cycle * cycle
        renew_day = np.where(is_sub, (renew_at - start_us) // day, -(10**9))
        j_r = np.clip((renew_day - 7 * b) // 7, 0, 4)
        first = k_cycle == 1
        q_path = m.renew_prob(np.stack(path, axis=1)[np.arange(len(idx)), j_r], first)
        before = np.arange(5)[None, :] <= j_r[:, None]
        p_quiet_sub = np.prod(np.where(before, none[1], 1.0), axis=1) * (
            q_path * np.prod(np.where(before, 1.0, none[1]), axis=1)
            + (1 - q_path) * np.prod(np.where(before, 1.0, none[0]), axis=1)
        )
        p_churn = np.where(is_sub, p_quiet_sub, np.prod(none[0], axis=1))
        was_active = _any_in_window(ev, QUALIFYING, t - 30 * day, t, n)[idx]
        quiet = ~_any_in_window(ev, QUALIFYING, t, t + 30 * day, n)[idx]
        out.append(_rows(idx, t, "churn_30d", was_active, p_churn, quiet))

        # upgrade_30d and renew_30d: carry the distribution over (level, purchase recency) through the weekly
        # transitions, day by day removing the mass that upgrades (hazard) or cancels at the renewal.
        si = np.flatnonzero(is_sub)
        ns = len(si)
        v = np.zeros((ns, m.N_STATES))
        v[np.arange(ns), lev[si].astype(np.int64) * m.N_RECENCY + since[si]] = 1.0
        u = v.copy()
        absorbed = np.zeros(ns)
        p_renew = np.zeros(ns)
        state_level = np.arange(m.N_STATES) // m.N_RECENCY
        levels = np.broadcast_to(state_level, (ns, m.N_STATES))
        q6 = m.renew_prob(levels, np.broadcast_to(first[si, None], (ns, m.N_STATES)))
        hz6 = m.UPGRADE_HAZARD[state_level][None, :] * m.UPGRADE_PLAN_MULT[plan[si]][:, None]
        first_renew_day = (anchor[si] + cycle - start_us) // day
        r_day = renew_day[si]
        for i in range(30):
            gd = 7 * b + i
            if i > 0 and i % 7 == 0:
                w = b + i // 7 - 1
                keys = m.state_key(np.ones(ns, np.int8), tenure[i // 7 - 1][si], reg[si], consent[si])
                tr = transitions[w, keys]
                v = np.einsum("nl,nlk->nk", v, tr)
                u = np.einsum("nl,nlk->nk", u, tr)
            at_r = r_day == gd
            p_renew = np.where(at_r, (u * q6).sum(axis=1), p_renew)
            absorbed = absorbed + np.where(at_r, (v * (1 - q6)).sum(axis=1), 0.0)
            v = np.where(at_r[:, None], v * q6, v)
            allowed = (gd > first_renew_day) & (gd != r_day)
            v = v * np.exp(-hz6 * allowed[:, None])
        p_up = np.zeros(len(idx))
        p_up[si] = 1.0 - absorbed - v.sum(axis=1)
        p_ren = np.zeros(len(idx))
        p_ren[si] = p_renew
        upgraded = _any_in_window(ev, [ETYPE["plan_upgrade"]], t, t + 30 * day, n)[idx]
        renewed = _any_in_window(ev, [ETYPE["renewal"]], t, t + 30 * day, n)[idx]
        out.append(_rows(idx, t, "upgrade_30d", is_sub, p_up, upgraded))
        out.append(_rows(idx, t, "renew_30d", is_sub, p_ren, renewed))

        # respond_7d: one row per send in the cutoff's week, scored as of the send.
        sent = sim.camp_week == b
        sc, s_time = sim.camp_cust[sent], sim.camp_sent[sent]
        lv, sb = sim.level[b][sc], sim.sub[b][sc]
        _, o, c, r = m.campaign_probs(lv, sb, cu.consent_email[sc], bool(promo[b]))
        send_at = np.full(n, np.iinfo(np.int64).max // 2, np.int64)
        send_at[sc] = s_time
        hit = type_mask([ETYPE["purchase"], ETYPE["coupon_redemption"]])[ev.etype] & (ev.campaign == b)
        hit &= (ev.time > send_at[ev.cust]) & (ev.time <= send_at[ev.cust] + 7 * day)
        responded = (np.bincount(ev.cust[hit], minlength=n) > 0)[sc]
        out.append(_rows(sc, s_time, "respond_7d", np.ones(len(sc), bool), o * c * r, responded))
    if not out:
        empty = np.zeros(0, np.int64)
        return OracleRows(
            empty,
            empty,
            empty.astype(np.int8),
            empty.astype(bool),
            empty.astype(float),
            empty.astype(np.int8),
        )
    return OracleRows.concat(out)
