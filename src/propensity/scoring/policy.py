"""The decision policy: from a run's score rows to each customer's next best action, and the rule that decided.

For every row, the first rule that applies decides it (its name goes in ``decision_policy``):

1. ``holdout_control`` — the customer is in a control group (of any experiment): never activated, no next best
   action at all, so the experiment measures what activation adds;
2. ``not_eligible`` — the action's eligibility rule left the customer out (no score);
3. ``suppressed:<list>`` — the customer is on a suppression list (a file of ids, an attribute, or events such as
   a bounce or an unsubscribe); a list with a ``channel`` suppresses only the actions sent through it;
4. ``frequency_cap`` — the customer was activated ``max`` times in the cap's period already (earlier runs);
5. ``no_consent:<channel>`` — the action's channel needs consent the customer has not given;
6. ``below_threshold`` — the score is under the action's threshold;
7. ``non_positive_ev`` — expected value = score × value − cost is not above 0.

The remaining rows are candidates. The customer's next best action is the candidate with the highest expected
value (ties: the action name first alphabetically); that row says ``ev_max``, the other candidates ``ev_lower``.
The next best action is written on all of the customer's rows (null when there is none).

>>> import pyarrow as pa
>>> from propensity.config.decisions import PolicySettings
>>> rows = pa.table({"customer_id": ["c1", "c1"], "action": ["buy_7d", "churn_30d"], "score": [0.3, 0.6],
...                  "eligible": [True, True], "holdout_group": [None, None], "consent": [None, None]})
>>> policy = PolicySettings.model_validate({"actions": {"buy_7d": {"value": 40.0, "cost": 1.0}}})
>>> out = decide(rows, policy, context=DecisionContext())
>>> out.column("next_best_action").to_pylist(), out.column("decision_policy").to_pylist()
(['buy_7d', 'buy_7d'], ['ev_max', 'ev_lower'])
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from propensity.config.decisions import PolicySettings
from propensity.core.errors import PropensityError

if TYPE_CHECKING:
    from propensity.scoring.score_store import ScoreStore

TRUE_WORDS = frozenset({"true", "1", "yes", "y", "opt_in", "opted_in", "t"})


class PolicyError(PropensityError):
    """A policy input that cannot be used (a suppression file that cannot be read, ...)."""


@dataclass(frozen=True)
class DecisionContext:
    """What the policy needs besides the rows: suppression lists (name → customer ids, applied in this order)
    and each customer's activations within the frequency cap's period."""

    suppressed: Mapping[str, frozenset[str]] = field(default_factory=dict)
    recent_activations: Mapping[str, int] = field(default_factory=dict)


def _consent_by_channel(
    consent: pa.ChunkedArray, channels: list[str], unknown: bool
) -> dict[str, np.ndarray]:
    """channel → per-row bool, parsing each distinct consent JSON once; a missing entry reads as ``unknown``."""
    enc = pc.dictionary_encode(consent).combine_chunks()
    valid = np.asarray(enc.indices.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    idx = enc.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    parsed = [json.loads(v) if v else {} for v in enc.dictionary.to_pylist()]
    out = {}
    for ch in channels:
        per_value = np.array([unknown if p.get(ch) is None else bool(p[ch]) for p in parsed], dtype=bool)
        given = np.full(len(idx), unknown, dtype=bool)
        if per_value.size:
            given[valid] = per_value[idx[valid]]
        out[ch] = given
    return out


def decide(rows: pa.Table, policy: PolicySettings, *, context: DecisionContext) -> pa.Table:
    """``rows`` with ``next_best_action`` and ``decision_policy`` filled (replaced if present)."""
    n = rows.num_rows
    customers = rows.column("customer_id").cast(pa.string())
    actions = rows.column("action").cast(pa.string())
    score = rows.column("score").cast(pa.float64()).fill_null(np.nan).to_numpy()
    eligible = np.asarray(
        rows.column("eligible").cast(pa.bool_()).fill_null(False).to_numpy(zero_copy_only=False), dtype=bool
    )
    eligible &= ~np.isnan(score)
    control = np.asarray(
        pc.equal(rows.column("holdout_group").cast(pa.string()), "control")
        .fill_null(False)
        .to_numpy(zero_copy_only=False),
        dtype=bool,
    )
    cust_enc = pc.dictionary_encode(customers).combine_chunks()
    cust = cust_enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    n_cust = len(cust_enc.dictionary)
    act_enc = pc.dictionary_encode(actions).combine_chunks()
    act = act_enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    act_names = act_enc.dictionary.to_pylist()
    # Action rank by name, for deterministic tie-breaks.
    act_rank = np.argsort(np.argsort(np.array(act_names, dtype=object)))[act] if act_names else act
    per_action = [policy.for_action(a) for a in act_names]
    threshold = np.array([p.threshold for p in per_action] or [0.0])[act]
    value = np.array([p.value for p in per_action] or [0.0])[act]
    cost = np.array([p.cost for p in per_action] or [0.0])[act]
    channel_of = [p.channel for p in per_action]

    reason = np.full(n, -1, dtype=np.int32)  # each row's rule, as an index into rule_names
    rule_names: list[str] = []
    undecided = np.ones(n, dtype=bool)

    def code(name: str) -> int:
        if name not in rule_names:
            rule_names.append(name)
        return rule_names.index(name)

    def rule(mask: np.ndarray, name: str) -> None:
        hit = mask & undecided
        reason[hit] = code(name)
        undecided[hit] = False

    customer_control = np.bincount(cust, weights=control, minlength=n_cust) > 0 if n else np.zeros(0, bool)
    rule(customer_control[cust] if n else control, "holdout_control")
    rule(~eligible, "not_eligible")
    list_channel = {s.name: s.channel for s in policy.suppression}
    for name, ids in context.suppressed.items():
        if ids:
            hit = np.asarray(
                pc.is_in(customers, pa.array(sorted(ids), pa.string())).to_numpy(zero_copy_only=False), bool
            )
            only = list_channel.get(name)
            if only is not None:  # only the actions sent through this channel
                on_channel = np.array([c == only for c in channel_of] or [False])[act]
                hit = hit & on_channel
            rule(hit, f"suppressed:{name}")
    if policy.frequency_cap is not None and context.recent_activations:
        capped_ids = [c for c, k in context.recent_activations.items() if k >= policy.frequency_cap.max]
        if capped_ids:
            hit = np.asarray(
                pc.is_in(customers, pa.array(capped_ids, pa.string())).to_numpy(zero_copy_only=False), bool
            )
            rule(hit, "frequency_cap")
    channels = sorted({c for c in channel_of if c is not None})
    if channels:
        consent = _consent_by_channel(
            rows.column("consent").cast(pa.string()), channels, policy.consent_when_unknown
        )
        for a, ch in enumerate(channel_of):
            if ch is not None:
                rule((act == a) & ~consent[ch], f"no_consent:{ch}")
    rule(eligible & (score < threshold), "below_threshold")
    ev = np.where(eligible, score * value - cost, -np.inf)
    rule(ev <= 0.0, "non_positive_ev")

    candidate = undecided
    chosen = np.zeros(n, dtype=bool)
    nba_action = np.full(n_cust, -1, dtype=np.int64)
    if candidate.any():
        rows_c = np.flatnonzero(candidate)
        # Sort candidates by customer, then EV descending, then action name; the first per customer wins.
        order = rows_c[np.lexsort((act_rank[rows_c], -ev[rows_c], cust[rows_c]))]
        first = np.ones(order.size, dtype=bool)
        first[1:] = cust[order[1:]] != cust[order[:-1]]
        winners = order[first]
        chosen[winners] = True
        nba_action[cust[winners]] = act[winners]
    reason[chosen] = code("ev_max")
    reason[candidate & ~chosen] = code("ev_lower")
    nba_codes = nba_action[cust] if n else np.zeros(0, np.int64)
    out = rows
    for col, (codes, names) in (
        ("next_best_action", (nba_codes, act_names)),
        ("decision_policy", (reason, rule_names)),
    ):
        arr = pa.DictionaryArray.from_arrays(
            pa.array(codes.astype(np.int32), mask=codes < 0), pa.array(names, pa.string())
        ).cast(pa.string())
        if col in out.column_names:
            out = out.set_column(out.column_names.index(col), col, arr)
        else:
            out = out.append_column(col, arr)
    return out


# ------------------------------------------------------------------------------------------ policy inputs
def attribute_values(
    con: duckdb.DuckDBPyConnection, attribute: str, as_of: datetime
) -> dict[str, str | None]:
    """Each customer's value of ``attribute`` as of ``as_of`` (the latest version known by then)."""
    rows = con.execute(
        """
        SELECT customer_id, arg_max(value, valid_from) FROM attributes
        WHERE attribute = ? AND greatest(valid_from, available_at) <= ?
        GROUP BY customer_id
        """,
        [attribute, as_of],
    ).fetchall()
    return {str(c): None if v is None else str(v) for c, v in rows}


def read_id_file(path: Path) -> frozenset[str]:
    """Customer ids from a file: one per line (a CSV's first column; a ``customer_id`` header is skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"policies.suppression: cannot read {path} ({exc.strerror})") from None
    ids = set()
    for i, line in enumerate(text.splitlines()):
        value = line.split(",", 1)[0].strip().strip('"')
        if not value or (i == 0 and value.lower() in ("customer_id", "id")):
            continue
        ids.add(value)
    return frozenset(ids)


def suppression_lists(
    con: duckdb.DuckDBPyConnection, policy: PolicySettings, as_of: datetime, root: Path
) -> dict[str, frozenset[str]]:
    """Each suppression list's customer ids as of ``as_of`` (files resolve against ``root``)."""
    out: dict[str, frozenset[str]] = {}
    for s in policy.suppression:
        ids: set[str] = set()
        if s.file is not None:
            p = Path(s.file).expanduser()
            ids |= read_id_file(p if p.is_absolute() else root / p)
        if s.attribute is not None:
            wanted = {v.lower() for v in s.values}
            ids |= {
                c
                for c, v in attribute_values(con, s.attribute, as_of).items()
                if v is not None and v.lower() in wanted
            }
        if s.event_types:
            ids |= customers_with_events(con, s.event_types, as_of)
        out[s.name] = frozenset(ids)
    return out


def customers_with_events(
    con: duckdb.DuckDBPyConnection, event_types: list[str], as_of: datetime
) -> set[str]:
    """Customers with an event of ``event_types`` that happened and was known by ``as_of``."""
    marks = ", ".join("?" for _ in event_types)
    rows = con.execute(
        f"""SELECT DISTINCT customer_id FROM events
            WHERE event_type IN ({marks}) AND event_time <= ? AND available_at <= ?""",
        [*event_types, as_of, as_of],
    ).fetchall()
    return {str(r[0]) for r in rows}


def recent_activations(store: ScoreStore, policy: PolicySettings, now: datetime) -> dict[str, int]:
    """Customers' activations (complete runs in which they got a next best action) scored in the cap's period
    before ``now`` (the new run's scored_at: activations happen when runs are scored, whatever their as_of);
    empty without a frequency cap."""
    cap = policy.frequency_cap
    if cap is None:
        return {}
    since = now - cap.period.timedelta
    counts: dict[str, int] = {}
    for run in store.runs():
        if run.status != "complete" or not since < run.scored_at <= now:
            continue
        rows = store.read_run(run.run_id)
        got = rows.filter(pc.is_valid(rows.column("next_best_action")))
        for c in pc.unique(got.column("customer_id")).to_pylist():
            counts[c] = counts.get(c, 0) + 1
    return counts


def attribute_table(con: duckdb.DuckDBPyConnection, attribute: str, as_of: datetime) -> pa.Table:
    """:func:`attribute_values` as an Arrow table (``customer_id``, ``value``, both text), for many customers."""
    return con.sql(
        """
        SELECT CAST(customer_id AS VARCHAR) AS customer_id, CAST(arg_max(value, valid_from) AS VARCHAR) AS value
        FROM attributes WHERE attribute = $a AND greatest(valid_from, available_at) <= $t GROUP BY customer_id
        """,
        params={"a": attribute, "t": as_of},
    ).to_arrow_table()


def consent_column(
    con: duckdb.DuckDBPyConnection, consent: Mapping[str, str], customers: pa.Array, as_of: datetime
) -> pa.Array:
    """:func:`consent_json` for many customers, vectorised: ``consent`` maps channel → attribute; each customer's
    JSON is built once per distinct combination of their channels' states, and taken for the others."""
    n = len(customers)
    if not consent:
        return pa.nulls(n, pa.string())
    channels = list(consent)
    code = np.zeros(n, dtype=np.int64)
    for ch in channels:  # per channel: 0 unknown, 1 given, 2 refused
        table = attribute_table(con, consent[ch], as_of)
        pos = pc.index_in(customers, value_set=table.column("customer_id").combine_chunks())
        value = table.column("value").combine_chunks().take(pos)
        given = pc.is_in(pc.utf8_lower(value), value_set=pa.array(sorted(TRUE_WORDS)))
        state = pc.if_else(pc.is_valid(value), pc.if_else(given, 1, 2), 0)
        code = code * 3 + np.asarray(state.to_numpy(zero_copy_only=False), dtype=np.int64)
    combos = pc.dictionary_encode(pa.array(code))
    texts: list[str | None] = []
    for c in combos.dictionary.to_pylist():
        known: dict[str, bool] = {}
        for ch in reversed(channels):
            c, state = divmod(c, 3)
            if state:
                known[ch] = state == 1
        texts.append(json.dumps(known, sort_keys=True) if known else None)
    return pc.take(pa.array(texts, pa.string()), combos.indices)


def consent_json(values: Mapping[str, Mapping[str, str | None]], customers: list[str]) -> list[str | None]:
    """Per customer, ``{"channel": bool}`` JSON from channel → (customer → attribute value); None when no
    channel is configured or none of its attributes is known for the customer."""
    if not values:
        return [None] * len(customers)
    cache: dict[tuple[Any, ...], str | None] = {}
    out: list[str | None] = []
    for c in customers:
        key = tuple(v.get(c) for v in values.values())
        if key not in cache:
            known = {ch: v.lower() in TRUE_WORDS for ch, v in zip(values, key, strict=True) if v is not None}
            cache[key] = json.dumps(known, sort_keys=True) if known else None
        out.append(cache[key])
    return out
