"""The leakage audit: does any feature of a training spine know something it could not have known at as_of?

Every check recomputes the whole feature set with the unchanged offline engine against a *view* of the log and
compares, feature by feature, with the production values (see ``docs/leakage-and-backfill.md``):

``reads_beyond_as_of`` (a leak)
    Recomputed from the log cut at each row's as_of: only events with ``event_time <= as_of`` and
    ``available_at <= as_of``, only attribute versions with ``valid_from <= as_of`` and ``available_at <=
    as_of``. In this declarative language no definition can read past as_of (windows end at as_of; there is no
    offset, no negative window), so this is always 0; the check proves it on the user's own data.
``late_sensitive`` (information, not a leak)
    Recomputed as if every event had been available at its ``event_time`` (late arrivals included). A feature
    that differs is sensitive to late data, and the difference proves the engine excluded those events.
``backdated`` (a leak)
    Attribute *snapshots* (one version per customer, one shared ``valid_from``: an undated table stamped
    "valid since the start", like Complete Journey's demographics) counted as available only from the moment
    they were loaded (``ingested_at``). A feature that differs reads a value the platform did not have at
    as_of. Attribute histories with their own dated versions are trusted.
``future_date`` (a leak)
    A ``days_since`` attribute below zero: the attribute holds a date after as_of.
``label_like`` (a warning)
    Single-feature ROC-AUC against an action's label, as ``max(AUC, 1 - AUC)``, at or above a threshold
    (0.95): the feature looks like the label.

Derived features are recomputed with everything else, so a derived feature over a leaky input is caught too
(its ``depends_on`` names the inputs).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from propensity.config.features import AnyFeature, AttributeFeature, DerivedFeature
from propensity.core.errors import PropensityError
from propensity.features._plan import FeaturePlan
from propensity.features.offline import compute_features

DEFAULT_THRESHOLD = 0.95
MIN_CLASS_ROWS = 10  # fewer positives (or negatives) than this: no AUC
MIN_CATEGORY_ROWS = 20  # rarer categories of a text feature are pooled before target encoding
FLOAT_TOLERANCE = 1e-9
DEFAULT_CUT_ROWS = 2000  # rows the reads_beyond_as_of check recomputes (a copy of the log each)
LEAK_FLAGS = ("reads_beyond_as_of", "backdated", "future_date")
_COUNTER = itertools.count()


class AuditError(PropensityError):
    """The audit cannot run: no features, nothing to audit."""


@dataclass
class CheckResult:
    """How many spine rows a check changed for one feature, with a few examples."""

    rows_differing: int
    share: float
    examples: list[dict[str, Any]] = field(default_factory=list)
    rows_checked: int = 0


@dataclass
class FeatureAudit:
    name: str
    kind: str
    depends_on: list[str]
    checks: dict[str, CheckResult] = field(default_factory=dict)
    auc: dict[str, float | None] = field(default_factory=dict)  # action -> max(AUC, 1 - AUC)
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def leaky(self) -> bool:
        return any(f in LEAK_FLAGS for f in self.flags)


@dataclass
class AuditReport:
    feature_set_version: str
    rows: int
    customers: int
    cutoffs: int
    threshold: float
    features: list[FeatureAudit]
    actions: dict[str, dict[str, int]] = field(default_factory=dict)  # action -> rows, positives
    attribute_sources: list[dict[str, Any]] = field(default_factory=list)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def flagged(self) -> list[FeatureAudit]:
        return [f for f in self.features if f.flags]

    def feature(self, name: str) -> FeatureAudit:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return {
            "feature_set_version": self.feature_set_version,
            "created_at": self.created_at.isoformat(),
            "rows": self.rows,
            "customers": self.customers,
            "cutoffs": self.cutoffs,
            "threshold": self.threshold,
            "actions": self.actions,
            "attribute_sources": self.attribute_sources,
            "flagged": [f.name for f in self.flagged],
            "features": [
                {
                    "name": f.name,
                    "kind": f.kind,
                    "depends_on": f.depends_on,
                    "flags": f.flags,
                    "notes": f.notes,
                    "auc": f.auc,
                    "checks": {
                        k: {
                            "rows_checked": c.rows_checked,
                            "rows_differing": c.rows_differing,
                            "share": c.share,
                            "examples": c.examples,
                        }
                        for k, c in f.checks.items()
                    },
                }
                for f in self.features
            ],
        }


# --- single-feature AUC ---------------------------------------------------------------------------------------


def roc_auc(score: np.ndarray, label: np.ndarray) -> float | None:
    """ROC-AUC of ``score`` for binary ``label`` (ties count one half); None without both classes."""
    y = label.astype(bool)
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return None
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts).astype(np.float64)
    ranks = ((ends - counts + 1 + ends) / 2.0)[inverse]
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def _scores(column: pa.ChunkedArray, label: np.ndarray) -> np.ndarray:
    """A feature column as numbers to rank: nulls lowest; text target-encoded (rare values pooled)."""
    typ = column.type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        values = ["\x00null" if v is None else str(v) for v in column.to_pylist()]
        uniq, inverse, counts = np.unique(
            np.array(values, dtype=object), return_inverse=True, return_counts=True
        )
        inverse = np.where(counts[inverse] < MIN_CATEGORY_ROWS, len(uniq), inverse)
        sums = np.bincount(inverse, weights=label.astype(np.float64), minlength=len(uniq) + 1)
        ns = np.bincount(inverse, minlength=len(uniq) + 1)
        rate = sums / np.maximum(ns, 1)
        return np.asarray(rate[inverse], dtype=np.float64)
    if pa.types.is_boolean(typ):
        values = column.to_pylist()
        return np.array([-1.0 if v is None else float(v) for v in values], dtype=np.float64)
    arr = column.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    return np.where(np.isnan(arr), -np.inf, arr)


def label_strength(column: pa.ChunkedArray, label: np.ndarray) -> float | None:
    """``max(AUC, 1 - AUC)`` of one feature against a label; None with too few rows of either class."""
    n1 = int(label.astype(bool).sum())
    if n1 < MIN_CLASS_ROWS or len(label) - n1 < MIN_CLASS_ROWS:
        return None
    auc = roc_auc(_scores(column, label), label)
    return None if auc is None else max(auc, 1.0 - auc)


# --- comparing production values with a view's ---------------------------------------------------------------


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _differs(name: str, typ: pa.DataType) -> str:
    a, b = f"p.{_q(name)}", f"x.{_q(name)}"
    if pa.types.is_floating(typ):
        return (
            f"({a} IS DISTINCT FROM {b} AND NOT coalesce(abs({a} - {b}) <= "
            f"{FLOAT_TOLERANCE} * greatest(1.0, abs({a}), abs({b})), FALSE))"
        )
    return f"{a} IS DISTINCT FROM {b}"


def _compare(plan: FeaturePlan, prod: pa.Table, other: pa.Table, examples: int) -> dict[str, CheckResult]:
    """Per feature: rows where ``other`` differs from ``prod`` (same rows, same order)."""
    n = prod.num_rows
    idx = pa.array(range(n), pa.int64())
    mem = duckdb.connect()
    try:
        mem.execute("SET TimeZone = 'UTC'").fetchall()
        mem.register("p", prod.append_column("_i", idx))
        mem.register("x", other.select(list(plan.names)).append_column("_i", idx))
        conds = [_differs(name, t) for name, t in zip(plan.names, plan.types, strict=True)]
        counts = mem.execute(
            "SELECT " + ", ".join(f"count(*) FILTER (WHERE {c})" for c in conds) + " FROM p JOIN x USING (_i)"
        ).fetchall()[0]
        out: dict[str, CheckResult] = {}
        for name, cond, k in zip(plan.names, conds, counts, strict=True):
            rows: list[dict[str, Any]] = []
            if k and examples:
                for cid, as_of, a, b in mem.execute(
                    f"SELECT p.customer_id, p.as_of, p.{_q(name)}, x.{_q(name)} FROM p JOIN x USING (_i) "
                    f"WHERE {cond} ORDER BY p._i LIMIT {int(examples)}"
                ).fetchall():
                    rows.append({"customer_id": cid, "as_of": as_of.isoformat(), "value": a, "would_be": b})
            out[name] = CheckResult(int(k), (int(k) / n) if n else 0.0, rows, n)
        return out
    finally:
        mem.close()


# --- views of the log ------------------------------------------------------------------------------------------


def attribute_sources(
    con: duckdb.DuckDBPyConnection, snapshot_sources: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Each (source, attribute) of the attributes table, and whether it is an undated snapshot."""
    rows = con.execute(
        """
        SELECT source, attribute, count(DISTINCT customer_id), count(*), count(DISTINCT valid_from),
               min(valid_from), max(ingested_at)
        FROM attributes GROUP BY ALL ORDER BY ALL
        """
    ).fetchall()
    out = []
    for source, attribute, customers, versions, distinct_vf, valid_from, loaded in rows:
        snapshot = (source in snapshot_sources) or (versions == customers and distinct_vf == 1)
        out.append(
            {
                "source": source,
                "attribute": attribute,
                "customers": int(customers),
                "versions": int(versions),
                "snapshot": bool(snapshot),
                "valid_from": valid_from.isoformat() if valid_from is not None else None,
                "loaded_at": loaded.isoformat() if loaded is not None else None,
            }
        )
    return out


def _depends_on(plan: FeaturePlan) -> dict[str, list[str]]:
    """Each derived feature's inputs, transitively (base features only)."""
    by_name: dict[str, AnyFeature] = {f.name: f for f in plan.features}

    def base(name: str, seen: frozenset[str]) -> set[str]:
        f = by_name[name]
        if not isinstance(f, DerivedFeature) or name in seen:
            return {name}
        out: set[str] = set()
        for ref in f.expression.refs():
            out |= base(ref, seen | {name})
        return out

    return {f.name: sorted(base(f.name, frozenset())) for f in plan.features if isinstance(f, DerivedFeature)}


def audit_features(
    con: duckdb.DuckDBPyConnection,
    features: Sequence[AnyFeature] | FeaturePlan,
    spine: pa.Table,
    *,
    labels: Mapping[str, pa.Table] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    snapshot_sources: Sequence[str] = (),
    examples: int = 3,
    cut_rows: int | None = DEFAULT_CUT_ROWS,
    compute: Any = None,
) -> AuditReport:
    """Audit ``features`` on ``spine`` (customer_id, as_of) against the ``events`` / ``attributes`` of ``con``.

    ``labels`` maps an action name to its rows (customer_id, as_of, label); each feature's label strength is
    measured on those rows. ``snapshot_sources`` names attribute sources known to be undated snapshots (a
    source without ``valid_from``); others are recognised from the data. The ``reads_beyond_as_of`` check
    (the dearest: a copy of the log per row) runs on at most ``cut_rows`` rows spread evenly over the spine
    (None: all); it tests a property of the definitions, which a sample shows as well as the whole.
    """
    plan = features if isinstance(features, FeaturePlan) else FeaturePlan(features)
    if not plan.names:
        raise AuditError("the project declares no features; nothing to audit")
    if spine.num_rows == 0:
        raise AuditError("the spine is empty; nothing to audit (ingest events, or widen --cutoffs)")
    spine = spine.select(["customer_id", "as_of"])
    # The production values on the project's engine (DuckDB or Spark); the checks' views of the log run on
    # DuckDB over the same data.
    prod = compute(plan, spine) if compute is not None else compute_features(con, plan, spine)
    deps = _depends_on(plan)
    audits = [FeatureAudit(f.name, f.kind, deps.get(f.name, [])) for f in plan.features]
    n = next(_COUNTER)
    keys, ev_cut, at_cut, ev_late, at_loaded = (
        f"_audit_keys_{n}", f"_audit_ev_cut_{n}", f"_audit_at_cut_{n}", f"_audit_ev_late_{n}",
        f"_audit_at_loaded_{n}",
    )  # fmt: skip
    sources = attribute_sources(con, snapshot_sources) if plan.attributes else []
    created: list[str] = []
    try:
        # 1. the log cut at each row's as_of: every (customer, as_of) gets its own copy, keyed customer@k.
        rows = pa.table(
            {
                "customer_id": spine.column("customer_id").cast(pa.string()),
                "as_of": prod.column("as_of"),
                "k": pa.array(range(spine.num_rows), pa.int64()),
            }
        )
        con.register(f"{keys}_arrow", rows)
        con.execute(f"CREATE TEMP TABLE {keys} AS SELECT * FROM {keys}_arrow").fetchall()
        con.unregister(f"{keys}_arrow")
        created.append(f"TABLE {keys}")
        key = "r.customer_id || '@' || CAST(r.k AS VARCHAR)"
        stride = 1 if not cut_rows or spine.num_rows <= cut_rows else -(-spine.num_rows // cut_rows)
        picked = f" AND r.k % {stride} = 0"
        con.execute(
            f"CREATE TEMP VIEW {ev_cut} AS SELECT e.* REPLACE ({key} AS customer_id) FROM events e "
            f"JOIN {keys} r ON e.customer_id = r.customer_id AND e.event_time <= r.as_of "
            "AND e.available_at <= r.as_of" + picked
        ).fetchall()
        created.append(f"VIEW {ev_cut}")
        con.execute(
            f"CREATE TEMP VIEW {at_cut} AS SELECT a.* REPLACE ({key} AS customer_id) FROM attributes a "
            f"JOIN {keys} r ON a.customer_id = r.customer_id AND a.valid_from <= r.as_of "
            "AND a.available_at <= r.as_of" + picked
        ).fetchall()
        created.append(f"VIEW {at_cut}")
        take = pa.array(range(0, spine.num_rows, stride), pa.int64())
        sub = prod.take(take)
        cut_spine = pa.table(
            {
                "customer_id": pa.array(
                    [
                        f"{c}@{i}"
                        for c, i in zip(sub.column("customer_id").to_pylist(), take.to_pylist(), strict=True)
                    ],
                    pa.string(),
                ),
                "as_of": sub.column("as_of"),
            }
        )
        cut = compute_features(con, plan, cut_spine, events_table=ev_cut, attributes_table=at_cut)
        for a, (_, res) in zip(audits, _compare(plan, sub, cut, examples).items(), strict=True):
            a.checks["reads_beyond_as_of"] = res
        # 2. late events as if available when they happened (skipped when no event of these rows was late).
        any_late = con.execute(
            f"SELECT EXISTS (SELECT 1 FROM events e JOIN {keys} r ON e.customer_id = r.customer_id "
            "AND e.event_time <= r.as_of AND e.available_at > r.as_of)"
        ).fetchall()[0][0]
        if any_late:
            con.execute(
                f"CREATE TEMP VIEW {ev_late} AS SELECT * REPLACE (event_time AS available_at) FROM events"
            ).fetchall()
            created.append(f"VIEW {ev_late}")
            late = compute_features(con, plan, spine, events_table=ev_late)
            for a, (_, res) in zip(audits, _compare(plan, prod, late, examples).items(), strict=True):
                a.checks["late_sensitive"] = res
        else:
            for a in audits:
                a.checks["late_sensitive"] = CheckResult(0, 0.0)
        # 3. attribute snapshots available only once loaded.
        snaps = [(s["source"], s["attribute"]) for s in sources if s["snapshot"]]
        if snaps:
            cond = " OR ".join(
                f"(source IS NOT DISTINCT FROM {_lit(s)} AND attribute = {_lit(attr)})" for s, attr in snaps
            )
            con.execute(
                f"CREATE TEMP VIEW {at_loaded} AS SELECT * REPLACE (CASE WHEN {cond} "
                "THEN greatest(available_at, ingested_at) ELSE available_at END AS available_at) FROM attributes"
            ).fetchall()
            created.append(f"VIEW {at_loaded}")
            loaded = compute_features(con, plan, spine, attributes_table=at_loaded)
            for a, (_, res) in zip(audits, _compare(plan, prod, loaded, examples).items(), strict=True):
                a.checks["backdated"] = res
    finally:
        for obj in reversed(created):
            kind, name = obj.split()
            con.execute(f"DROP {kind} IF EXISTS {name}").fetchall()

    # 4. future dates in days_since attributes (and the derived features using them).
    for a, f in zip(audits, plan.features, strict=True):
        if isinstance(f, AttributeFeature) and f.type == "days_since":
            values = prod.column(f.name).cast(pa.float64()).to_numpy(zero_copy_only=False)
            bad = int(np.sum(values < 0))
            a.checks["future_date"] = CheckResult(bad, bad / prod.num_rows)

    # 5. label-likeness.
    action_counts: dict[str, dict[str, int]] = {}
    for action, table in (labels or {}).items():
        joined = _join_labels(prod, table, plan.names)
        y = np.asarray(joined.column("label").to_numpy(zero_copy_only=False), dtype=np.int64)
        action_counts[action] = {"rows": len(y), "positives": int(y.sum())}
        for a in audits:
            a.auc[action] = label_strength(joined.column(a.name), y)

    _judge(audits, threshold, deps)
    customers = len(set(spine.column("customer_id").to_pylist()))
    cutoffs = len(set(prod.column("as_of").to_pylist()))
    return AuditReport(
        feature_set_version=plan.version,
        rows=spine.num_rows,
        customers=customers,
        cutoffs=cutoffs,
        threshold=threshold,
        features=audits,
        actions=action_counts,
        attribute_sources=sources,
    )


def _lit(value: str | None) -> str:
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


def _join_labels(prod: pa.Table, labels: pa.Table, names: Sequence[str]) -> pa.Table:
    mem = duckdb.connect()
    try:
        mem.execute("SET TimeZone = 'UTC'").fetchall()
        mem.register("f", prod)
        mem.register("l", labels.select(["customer_id", "as_of", "label"]))
        cols = ", ".join(f"f.{_q(n)}" for n in names)
        return mem.sql(
            f"SELECT l.label, {cols} FROM l JOIN f ON f.customer_id = l.customer_id AND f.as_of = l.as_of"
        ).to_arrow_table()
    finally:
        mem.close()


def _judge(audits: list[FeatureAudit], threshold: float, deps: Mapping[str, list[str]]) -> None:
    for a in audits:
        checks = a.checks
        via = f" (via {', '.join(deps[a.name])})" if a.name in deps else ""
        if checks.get("reads_beyond_as_of") and checks["reads_beyond_as_of"].rows_differing:
            a.flags.append("reads_beyond_as_of")
            a.notes.append("its value changes when the log is cut at as_of: it reads data from after as_of")
        if checks.get("backdated") and checks["backdated"].rows_differing:
            a.flags.append("backdated")
            a.notes.append(
                f"reads an undated attribute snapshot loaded after as_of{via} "
                f"({checks['backdated'].share:.0%} of rows); give the source a real valid_from, or drop it"
            )
        if checks.get("future_date") and checks["future_date"].rows_differing:
            a.flags.append("future_date")
            a.notes.append("holds a date after as_of: the attribute records the future")
        strong = {k: v for k, v in a.auc.items() if v is not None and v >= threshold}
        if strong:
            a.flags.append("label_like")
            a.notes.append(
                "looks like the label: "
                + ", ".join(f"AUC {v:.3f} alone for {k}" for k, v in sorted(strong.items()))
                + via
            )
        late = checks.get("late_sensitive")
        if late and late.rows_differing:
            a.notes.append(
                f"sensitive to late data: {late.share:.1%} of rows would differ had late events been on "
                "time (the engine correctly leaves them out)"
            )


# --- the workspace-level audit -----------------------------------------------------------------------------------


def write_audit_report(report: AuditReport, folder: Path) -> Path:
    """Write the report as JSON into ``folder`` (the workspace's reports folder); return the file."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = report.created_at.strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"features-audit-{stamp}.json"
    path.write_text(json.dumps(report.to_json(), indent=2, default=str) + "\n", encoding="utf-8")
    return path
