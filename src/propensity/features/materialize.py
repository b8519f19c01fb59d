"""Materialised historical features, and backfill after late or corrected events.

``materialize`` computes a feature set for a spine of (customer, as_of) rows with the offline engine and stores
the values in the ``feature_values`` table of the workspace's DuckDB file. ``backfill`` later finds the events
(and attribute versions) that arrived after those rows were computed and that the visibility rule lets them
see, recomputes exactly the affected rows in one set-based pass, and replaces them in one transaction.

Layout (see ``docs/leakage-and-backfill.md``):

``feature_values``
    Wide: ``customer_id, as_of, feature_set_version, seen_until`` then one typed column per feature, in
    declared order. It holds one feature set version at a time; materialising a different version rebuilds
    it (materialised values are a cache of the immutable log, reproducible at will). ``seen_until`` is the
    high-water mark of the data a row was computed from: the greatest ``ingested_at`` in the log then.
``feature_runs``
    One row per materialisation or backfill: what it did and the high-water mark it advanced to.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa

from propensity.config.features import AggregateFeature, AnyFeature, SessionFeature
from propensity.core.errors import PropensityError
from propensity.events.log import open_event_log, transaction
from propensity.features._plan import FeaturePlan
from propensity.features.offline import compute_features
from propensity.workspace import Workspace

TABLE = "feature_values"
RUNS_TABLE = "feature_runs"
KEY_COLUMNS = ("customer_id", "as_of", "feature_set_version", "seen_until")
FLOAT_TOLERANCE = 1e-9

RUNS_DDL = f"""
CREATE TABLE IF NOT EXISTS {RUNS_TABLE} (
    run_id              VARCHAR NOT NULL,
    kind                VARCHAR NOT NULL,
    feature_set_version VARCHAR NOT NULL,
    started_at          TIMESTAMPTZ NOT NULL,
    finished_at         TIMESTAMPTZ NOT NULL,
    high_water_mark     TIMESTAMPTZ,
    first_as_of         TIMESTAMPTZ,
    last_as_of          TIMESTAMPTZ,
    customers           BIGINT,
    rows_written        BIGINT,
    rows_changed        BIGINT,
    rows_unchanged      BIGINT,
    events_considered   BIGINT,
    detail              JSON
)
"""

_SQL_TYPES = {
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.string(): "VARCHAR",
    pa.bool_(): "BOOLEAN",
}


class MaterializeError(PropensityError):
    """Materialising or back-filling cannot proceed (no features, nothing materialised, changed definitions)."""


@dataclass
class MaterializeRun:
    """What one materialisation wrote."""

    run_id: str
    feature_set_version: str
    rows: int
    customers: int
    first_as_of: datetime | None
    last_as_of: datetime | None
    high_water_mark: datetime | None
    seconds: float
    rebuilt: bool = False


@dataclass
class BackfillReport:
    """What one backfill found and did."""

    run_id: str
    feature_set_version: str
    events_new: int  # events ingested after the rows' high-water mark
    events_in_range: int  # ... whose event_time falls before the last materialised as_of
    attributes_new: int  # attribute versions loaded after the high-water mark
    customers: int  # customers with at least one recomputed or added row
    rows_recomputed: int
    rows_added: int  # grid materialisations: rows of customers the new history made known earlier
    rows_changed: int
    rows_unchanged: int
    customers_changed: int
    high_water_mark: datetime | None
    seconds: float

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        out["high_water_mark"] = None if self.high_water_mark is None else self.high_water_mark.isoformat()
        return out


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _plan(features: Sequence[AnyFeature] | FeaturePlan) -> FeaturePlan:
    plan = features if isinstance(features, FeaturePlan) else FeaturePlan(features)
    if not plan.names:
        raise MaterializeError("the project declares no features; add some under `features:` first")
    clash = sorted(set(plan.names) & set(KEY_COLUMNS))
    if clash:
        raise MaterializeError(
            f"feature name(s) {', '.join(clash)} clash with columns of {TABLE}; rename the feature(s)"
        )
    return plan


def _columns(plan: FeaturePlan) -> list[tuple[str, str]]:
    return [
        ("customer_id", "VARCHAR"),
        ("as_of", "TIMESTAMP WITH TIME ZONE"),
        ("feature_set_version", "VARCHAR"),
        ("seen_until", "TIMESTAMP WITH TIME ZONE"),
    ] + [(n, _SQL_TYPES.get(t, "VARCHAR")) for n, t in zip(plan.names, plan.types, strict=True)]


def _existing_columns(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]] | None:
    rows = con.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? "
        "ORDER BY ordinal_position",
        [TABLE],
    ).fetchall()
    return [(str(r[0]), str(r[1])) for r in rows] or None


def _ensure_table(con: duckdb.DuckDBPyConnection, plan: FeaturePlan) -> bool:
    """Create ``feature_values`` for this plan; rebuild it when it holds another layout. True if rebuilt."""
    con.execute(RUNS_DDL).fetchall()
    wanted = _columns(plan)
    existing = _existing_columns(con)
    rebuilt = False
    if existing is not None:
        versions = con.execute(f"SELECT DISTINCT feature_set_version FROM {TABLE}").fetchall()
        if existing == wanted and all(v[0] == plan.version for v in versions):
            return False
        con.execute(f"DROP TABLE {TABLE}").fetchall()
        rebuilt = True
    cols = ", ".join(f"{_q(n)} {t}" for n, t in wanted)
    con.execute(f"CREATE TABLE {TABLE} ({cols})").fetchall()
    return rebuilt


def high_water_mark(con: duckdb.DuckDBPyConnection) -> datetime | None:
    """The greatest ``ingested_at`` in the log (events and attributes): everything up to it has been seen."""
    row = con.execute(
        "SELECT max(t) FROM (SELECT max(ingested_at) AS t FROM events "
        "UNION ALL SELECT max(ingested_at) FROM attributes)"
    ).fetchall()[0]
    value = row[0]
    return value if isinstance(value, datetime) else None


def _ceil_grid(t: datetime, align: datetime, every: timedelta) -> datetime:
    k = -((align - t) // every)
    return align + k * every


def grid_cutoffs(
    con: duckdb.DuckDBPyConnection,
    every: timedelta,
    *,
    align: datetime,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[datetime]:
    """Cutoffs ``align + k × every`` from ``start`` (default: the first event) to ``end`` (the last one)."""
    if every <= timedelta(0):
        raise MaterializeError("--every must be longer than 0s, e.g. 7d")
    lo, hi = con.execute("SELECT min(event_time), max(event_time) FROM events").fetchall()[0]
    if lo is None:
        raise MaterializeError("the event log is empty; ingest events first")
    first = _ceil_grid(start or lo, align, every)
    last = end or hi
    out: list[datetime] = []
    t = first
    while t <= last:
        out.append(t.astimezone(UTC))
        t += every
    if not out:
        raise MaterializeError(f"no cutoff on the grid between {first.isoformat()} and {last.isoformat()}")
    return out


def grid_spine(con: duckdb.DuckDBPyConnection, cutoffs: Sequence[datetime]) -> pa.Table:
    """Every customer known by each cutoff (its first event or attribute visible by then) × the cutoffs."""
    cut = pa.table({"as_of": pa.array(list(cutoffs), pa.timestamp("us", tz="UTC"))})
    con.register("_mat_cutoffs", cut)
    try:
        table = con.sql(
            """
            WITH known AS (
                SELECT customer_id, min(t) AS first_t FROM (
                    SELECT customer_id, min(greatest(event_time, available_at)) AS t FROM events GROUP BY 1
                    UNION ALL
                    SELECT customer_id, min(greatest(valid_from, available_at)) FROM attributes GROUP BY 1
                ) GROUP BY 1
            )
            SELECT k.customer_id, c.as_of FROM known k JOIN _mat_cutoffs c ON k.first_t <= c.as_of
            ORDER BY c.as_of, k.customer_id
            """
        ).to_arrow_table()
    finally:
        con.unregister("_mat_cutoffs")
    return table.set_column(1, "as_of", table.column("as_of").cast(pa.timestamp("us", tz="UTC")))


def _write_rows(
    con: duckdb.DuckDBPyConnection, plan: FeaturePlan, values: pa.Table, hwm: datetime | None
) -> None:
    """Replace the rows of ``values`` (customer_id, as_of, features...) in ``feature_values``."""
    con.register("_mat_values", values)
    try:
        con.execute(
            f"DELETE FROM {TABLE} t USING _mat_values v WHERE t.customer_id = v.customer_id "
            "AND t.as_of = v.as_of AND t.feature_set_version = ?",
            [plan.version],
        ).fetchall()
        cols = ", ".join(_q(n) for n in plan.names)
        con.execute(
            f"INSERT INTO {TABLE} SELECT customer_id, as_of, ?, ?, {cols} FROM _mat_values",
            [plan.version, hwm],
        ).fetchall()
    finally:
        con.unregister("_mat_values")


def _record_run(con: duckdb.DuckDBPyConnection, values: dict[str, object]) -> None:
    names = list(values)
    con.execute(
        f"INSERT INTO {RUNS_TABLE} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})",
        list(values.values()),
    ).fetchall()


def materialize(
    workspace: Workspace,
    features: Sequence[AnyFeature] | FeaturePlan,
    spine: pa.Table,
    *,
    grid: bool = False,
) -> MaterializeRun:
    """Compute ``features`` for every row of ``spine`` and store them (replacing rows already there).

    ``grid`` says the spine is every known customer at each of its as-of times (:func:`grid_spine`); backfill
    then also adds the rows of customers that back-filled history makes known earlier.

    The values and the high-water mark are read in one transaction under the workspace's write lock, so every
    row's ``seen_until`` is exactly the data it was computed from.
    """
    plan = _plan(features)
    t0 = time.perf_counter()
    started = datetime.now(UTC)
    run_id = uuid.uuid4().hex[:16]
    spine = spine.select(["customer_id", "as_of"])
    with workspace.write_lock(), open_event_log(workspace).connection() as con, transaction(con):
        rebuilt = _ensure_table(con, plan)
        hwm = high_water_mark(con)
        values = compute_features(con, plan, spine)
        _write_rows(con, plan, values, hwm)
        con.register("_mat_spine", spine)
        first, last, customers = con.execute(
            "SELECT min(as_of), max(as_of), count(DISTINCT customer_id) FROM _mat_spine"
        ).fetchall()[0]
        con.unregister("_mat_spine")
        _record_run(
            con,
            {
                "run_id": run_id,
                "kind": "materialize",
                "feature_set_version": plan.version,
                "started_at": started,
                "finished_at": datetime.now(UTC),
                "high_water_mark": hwm,
                "first_as_of": first,
                "last_as_of": last,
                "customers": int(customers or 0),
                "rows_written": values.num_rows,
                "detail": json.dumps({"rebuilt": rebuilt, "grid": grid, "features": list(plan.names)}),
            },
        )
    return MaterializeRun(
        run_id=run_id,
        feature_set_version=plan.version,
        rows=values.num_rows,
        customers=int(customers or 0),
        first_as_of=first,
        last_as_of=last,
        high_water_mark=hwm,
        seconds=time.perf_counter() - t0,
        rebuilt=rebuilt,
    )


def event_reach(plan: FeaturePlan) -> timedelta | None:
    """How far back from as_of an event can still change a row (None: without limit, e.g. lifetime).

    Conservative: a bucketed window reaches at most one bucket further than its length; a session group no
    further than its horizon plus its gap.
    """
    reach = 0
    for f in plan.features:
        if isinstance(f, AggregateFeature):
            if f.window.is_lifetime:
                return None
            bucket = f.effective_bucket
            reach = max(reach, f.window.seconds + (bucket.seconds if bucket is not None else 0))
        elif isinstance(f, SessionFeature):
            window = f.window.seconds if f.window is not None else 0
            reach = max(reach, max(f.lookback.seconds, window) + f.gap.seconds)
    return timedelta(seconds=reach)


def _affected_sql(plan: FeaturePlan, reach: timedelta | None) -> str:
    """Rows of ``feature_values`` that an event or attribute version arrived since ``seen_until`` can change."""
    near = (
        ""
        if reach is None
        else f" AND e.event_time > fv.as_of - INTERVAL '{int(reach.total_seconds())} seconds'"
    )
    parts = [
        f"""SELECT fv.customer_id, fv.as_of FROM fv JOIN new_events e ON e.customer_id = fv.customer_id
            AND e.ingested_at > fv.seen_until AND e.event_time <= fv.as_of AND e.available_at <= fv.as_of{near}"""
    ]
    if plan.attributes:
        parts.append(
            """SELECT fv.customer_id, fv.as_of FROM fv JOIN new_attributes a ON a.customer_id = fv.customer_id
               AND a.ingested_at > fv.seen_until AND a.valid_from <= fv.as_of AND a.available_at <= fv.as_of"""
        )
    return " UNION ".join(parts)


def _changed_sql(plan: FeaturePlan) -> str:
    """A condition over ``old`` and ``new`` (aliases) that holds when any feature differs."""
    conds = []
    for name, typ in zip(plan.names, plan.types, strict=True):
        a, b = f"old.{_q(name)}", f"new.{_q(name)}"
        if pa.types.is_floating(typ):
            conds.append(
                f"({a} IS DISTINCT FROM {b} AND NOT coalesce(abs({a} - {b}) <= "
                f"{FLOAT_TOLERANCE} * greatest(1.0, abs({a}), abs({b})), FALSE))"
            )
        else:
            conds.append(f"{a} IS DISTINCT FROM {b}")
    return " OR ".join(conds)


def backfill(
    workspace: Workspace, features: Sequence[AnyFeature] | FeaturePlan | None = None
) -> BackfillReport:
    """Recompute the materialised rows that events (or attribute versions) ingested since they were computed
    can change, and only those; replace them in one transaction and advance every row's high-water mark.

    A row (c, t) is affected by a newly ingested event of c only if the visibility rule lets t see it
    (``event_time <= t`` and ``available_at <= t``) and it is within the longest window's reach of t: a late
    event (available after t) never changes t's row, so it costs no recomputation at all.
    """
    plan = _plan(features if features is not None else workspace.spec.features)
    t0 = time.perf_counter()
    started = datetime.now(UTC)
    run_id = uuid.uuid4().hex[:16]
    with workspace.write_lock(), open_event_log(workspace).connection() as con:
        con.execute(RUNS_DDL).fetchall()
        existing = _existing_columns(con)
        if existing is None:
            raise MaterializeError("nothing is materialised yet; run `propensity features materialize` first")
        versions = [
            str(r[0]) for r in con.execute(f"SELECT DISTINCT feature_set_version FROM {TABLE}").fetchall()
        ]
        if existing != _columns(plan) or any(v != plan.version for v in versions):
            raise MaterializeError(
                f"the materialised features ({', '.join(versions) or 'none'}) are not this feature set "
                f"({plan.version}); the definitions changed, so run `propensity features materialize` again"
            )
        with transaction(con):
            from propensity.features.spark import feature_function

            report = _backfill_in_transaction(con, plan, run_id, started, feature_function(workspace, con))
    report.seconds = time.perf_counter() - t0
    return report


def _backfill_in_transaction(
    con: duckdb.DuckDBPyConnection,
    plan: FeaturePlan,
    run_id: str,
    started: datetime,
    compute: Any = None,
) -> BackfillReport:
    compute = compute or (lambda features, spine: compute_features(con, features, spine))
    hwm = high_water_mark(con)
    lo_seen, last_as_of = con.execute(
        f"SELECT min(seen_until), max(as_of) FROM {TABLE} WHERE feature_set_version = ?", [plan.version]
    ).fetchall()[0]
    floor = lo_seen or datetime(1970, 1, 1, tzinfo=UTC)
    con.execute(
        "CREATE OR REPLACE TEMP TABLE new_events AS SELECT customer_id, event_time, available_at, ingested_at "
        "FROM events WHERE ingested_at > ?",
        [floor],
    ).fetchall()
    con.execute(
        "CREATE OR REPLACE TEMP TABLE new_attributes AS SELECT customer_id, valid_from, available_at, ingested_at "
        "FROM attributes WHERE ingested_at > ?",
        [floor],
    ).fetchall()
    ev_new, ev_range = con.execute(
        "SELECT count(*), count(*) FILTER (WHERE event_time <= ?) FROM new_events", [last_as_of]
    ).fetchall()[0]
    attr_new = con.execute("SELECT count(*) FROM new_attributes").fetchall()[0][0]
    affected = con.sql(
        f"WITH fv AS (SELECT customer_id, as_of, seen_until FROM {TABLE} WHERE feature_set_version = "
        f"'{plan.version}') SELECT DISTINCT * FROM ({_affected_sql(plan, event_reach(plan))}) "
        "ORDER BY as_of, customer_id"
    ).to_arrow_table()
    grid = con.execute(
        f"SELECT count(*) > 0 AND bool_and(coalesce(CAST(json_extract(detail, '$.grid') AS BOOLEAN), FALSE)) "
        f"FROM {RUNS_TABLE} WHERE kind = 'materialize' AND feature_set_version = ?",
        [plan.version],
    ).fetchall()[0][0]
    added = _added_rows(con, plan) if grid else affected.slice(0, 0)
    todo = pa.concat_tables([_utc_as_of(affected), _utc_as_of(added)])
    changed = customers_changed = customers = 0
    if todo.num_rows:
        new = compute(plan, todo)
        con.register("_bf_new", new)
        try:
            changed, customers_changed = con.execute(
                f"""SELECT count(*) FILTER (WHERE {_changed_sql(plan)}),
                           count(DISTINCT new.customer_id) FILTER (WHERE {_changed_sql(plan)})
                    FROM _bf_new new JOIN {TABLE} old ON old.customer_id = new.customer_id
                         AND old.as_of = new.as_of AND old.feature_set_version = ?""",
                [plan.version],
            ).fetchall()[0]
        finally:
            con.unregister("_bf_new")
        customers = len(set(todo.column("customer_id").to_pylist()))
        _write_rows(con, plan, new, hwm)
    con.execute(
        f"UPDATE {TABLE} SET seen_until = ? WHERE feature_set_version = ?", [hwm, plan.version]
    ).fetchall()
    con.execute("DROP TABLE new_events").fetchall()
    con.execute("DROP TABLE new_attributes").fetchall()
    report = BackfillReport(
        run_id=run_id,
        feature_set_version=plan.version,
        events_new=int(ev_new),
        events_in_range=int(ev_range),
        attributes_new=int(attr_new),
        customers=int(customers),
        rows_recomputed=affected.num_rows,
        rows_added=added.num_rows,
        rows_changed=int(changed),
        rows_unchanged=affected.num_rows - int(changed),
        customers_changed=int(customers_changed),
        high_water_mark=hwm,
        seconds=0.0,
    )
    _record_run(
        con,
        {
            "run_id": run_id,
            "kind": "backfill",
            "feature_set_version": plan.version,
            "started_at": started,
            "finished_at": datetime.now(UTC),
            "high_water_mark": hwm,
            "customers": report.customers,
            "rows_written": report.rows_recomputed + report.rows_added,
            "rows_changed": report.rows_changed,
            "rows_unchanged": report.rows_unchanged,
            "events_considered": report.events_in_range,
            "detail": json.dumps(report.to_json()),
        },
    )
    return report


def _utc_as_of(table: pa.Table) -> pa.Table:
    return table.set_column(1, "as_of", table.column("as_of").cast(pa.timestamp("us", tz="UTC")))


def _added_rows(con: duckdb.DuckDBPyConnection, plan: FeaturePlan) -> pa.Table:
    """(customer, as_of) pairs a grid materialisation lacks: customers of the new data, at the table's as-of
    times at which they are now known (first event or attribute visible) but have no row."""
    return con.sql(
        f"""
        WITH cuts AS (SELECT DISTINCT as_of FROM {TABLE} WHERE feature_set_version = '{plan.version}'),
        cands AS (SELECT customer_id FROM new_events UNION SELECT customer_id FROM new_attributes),
        known AS (
            SELECT customer_id, min(t) AS first_t FROM (
                SELECT customer_id, min(greatest(event_time, available_at)) AS t FROM events
                WHERE customer_id IN (SELECT customer_id FROM cands) GROUP BY 1
                UNION ALL
                SELECT customer_id, min(greatest(valid_from, available_at)) FROM attributes
                WHERE customer_id IN (SELECT customer_id FROM cands) GROUP BY 1
            ) GROUP BY 1
        )
        SELECT k.customer_id, c.as_of FROM known k JOIN cuts c ON k.first_t <= c.as_of
        WHERE NOT EXISTS (SELECT 1 FROM {TABLE} f WHERE f.customer_id = k.customer_id AND f.as_of = c.as_of
                          AND f.feature_set_version = '{plan.version}')
        ORDER BY c.as_of, k.customer_id
        """
    ).to_arrow_table()


def read_feature_values(workspace: Workspace) -> pa.Table:
    """The whole ``feature_values`` table, ordered by as_of and customer (empty when nothing is materialised)."""
    with workspace.write_lock(), open_event_log(workspace).connection() as con:
        if _existing_columns(con) is None:
            return pa.table({})
        return con.sql(f"SELECT * FROM {TABLE} ORDER BY as_of, customer_id").to_arrow_table()


def materialize_grid(
    workspace: Workspace,
    every: timedelta,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    features: Sequence[AnyFeature] | FeaturePlan | None = None,
) -> MaterializeRun:
    """Materialise the project's features for every known customer at cutoffs ``align + k × every`` (the
    training grid's ``align``) from ``start`` (default: the first event) to ``end`` (default: the last)."""
    plan = _plan(features if features is not None else workspace.spec.features)
    with workspace.write_lock(), open_event_log(workspace).connection() as con:
        cutoffs = grid_cutoffs(con, every, align=workspace.spec.training.spine.align, start=start, end=end)
        spine = grid_spine(con, cutoffs)
    return materialize(workspace, plan, spine, grid=True)
