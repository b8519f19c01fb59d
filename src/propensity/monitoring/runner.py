"""``run_monitors``: gather what the monitors need from the workspace, run them, store the run, send alerts.

What each monitor looks at:

* **sources** (the event log): hours since each source's last available event, the p95 delay between event
  time and availability over the last 24 hours, and the last 24 hours' volume against the trailing windows.
* **features**: the customers known at the latest training-grid cutoff at or before ``as_of`` (any event
  available by then; a seeded hash sample of at most ``monitoring.sample_customers``), with point-in-time
  features from the offline engine, against a reference computed the same way at the production bundle's latest
  training cutoffs (or ``monitoring.reference.at``): the same point of the week on both sides.
* **scores** (with a production bundle): the latest scoring run of that bundle at or before ``as_of``, or else
  each action's eligible sampled customers now (the latest grid cutoff; a triggered action's triggers of
  ``monitoring.trigger_window``) scored by the bundle, against the bundle's calibrated test-score distribution;
  CBPE estimates from those scores.
* **calibration and AUC**: per grid period whose labels have matured by the newest event seen (never by the
  wall clock: :func:`propensity.events.clock.label_horizon`), the eligible sampled customers labelled
  with the action's label code and scored by the bundle (each period computed once per bundle, then cached).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from propensity.config.actions import Action
from propensity.config.monitoring import AlertSettings, MonitoringSettings
from propensity.core.clock import is_matured
from propensity.core.errors import PropensityError
from propensity.core.hashing import content_hash, sample_key_sql
from propensity.events.clock import DataClock, label_horizon
from propensity.events.log import open_event_log
from propensity.features.offline import compute_features, parse_features
from propensity.labels.labels import build_labels
from propensity.monitoring import monitors as m
from propensity.monitoring.cbpe import estimate_performance, measured_performance
from propensity.monitoring.reference import FeatureSummary, summarise
from propensity.monitoring.store import MonitorRun, dumps, save_run
from propensity.registry.bundle import Bundle, load_bundle
from propensity.registry.registry import Registry
from propensity.registry.table_samples import (
    LABEL,
    SCORE_PREFIX,
    read_sample,
    supplied_sample_path,
    training_sample_path,
)
from propensity.training.metrics import expected_calibration_error, reliability_curve
from propensity.workspace import Workspace

Progress = Callable[[str, int, int], None]
DAY = timedelta(days=1)
REFERENCE_VERSION = 1


class NoMonitorDataError(PropensityError):
    """The workspace has nothing to monitor (no events ingested)."""


def run_monitors(
    workspace: Workspace,
    *,
    as_of: datetime | None = None,
    progress: Progress | None = None,
    store: bool = True,
    send_alerts: bool = True,
) -> MonitorRun:
    """Run every monitor as of ``as_of`` (default: the project's clock: now, or the event log's end under
    ``clock: data``), store the run in the workspace, and send alerts.

    Raises :class:`NoMonitorDataError` when the event log is empty.
    """
    settings, alerts = workspace.spec.monitoring, workspace.spec.alerts
    started = datetime.now(UTC)
    # The project's clock: now (clock: live) or the event log's end (clock: data); a naive as_of is UTC.
    clock = DataClock.read(workspace, now=started)
    as_of = clock.as_of(as_of)
    results: list[m.MonitorResult] = []
    notes: list[str] = []
    stale = clock.warning(as_of)
    if stale:
        notes.append(stale)
    # The score store takes the workspace lock itself: read it before this run takes it.
    stored = latest_stored_scores(workspace, as_of, notes)
    with workspace.write_lock(), open_event_log(workspace).connection() as con:
        bundle = _production_bundle(workspace, notes)
        # A labelled table's bundle is monitored from its training rows and its score runs (no events needed).
        tables = _table_actions(bundle)
        if not tables and not con.execute("SELECT count(*) FROM events").fetchall()[0][0]:
            raise NoMonitorDataError(f"{workspace.root}: the event log is empty; ingest events first")
        step = _Steps(progress)
        step("sources")
        results += source_monitors(con, workspace, as_of, settings, alerts)
        features = parse_features(bundle.manifest.features) if bundle else list(workspace.spec.features)
        sample = known_customers(con, as_of, settings.sample_customers)
        step("features")
        if features:
            reference = feature_reference(con, workspace, bundle, features, settings, notes)
            if reference is not None:
                # Like for like: the reference is taken at cutoffs of the training grid (Monday 00:00 by
                # default), so the snapshot is taken at the latest one too; a feature with a weekly rhythm
                # (campaign sends, weekend visits) would otherwise drift with the day of the week.
                spine = workspace.spec.training.spine
                at = _grid_cutoff_at_or_before(as_of, spine.align, spine.slide.timedelta)
                at_sample = sample if at == as_of else known_customers(con, at, settings.sample_customers)
                current = compute_features(con, features, _spine(at_sample, at))
                for f in features:
                    if f.name in reference:
                        results += m.feature_monitors(reference[f.name], current.column(f.name), alerts)
        elif not tables:
            notes.append("the project declares no features: feature drift not monitored")
        step("model")
        if bundle is not None:
            if stored is not None and stored[1] != bundle.id:
                notes.append(
                    f"latest score run {stored[0]} is from bundle {stored[1]}, not production: not used"
                )
                stored = None
            results += model_monitors(
                con, workspace, bundle, features, sample, as_of, settings, alerts, notes, stored=stored
            )
            if tables:
                results += table_monitors(workspace, bundle, tables, as_of, settings, alerts, notes, stored)
        step("done")
        finished = datetime.now(UTC)
        run = MonitorRun(uuid.uuid4().hex[:16], as_of, started, finished, bundle.id if bundle else None,
                         sorted(results, key=lambda r: (r.name, r.subject)), notes)  # fmt: skip
        if store:
            save_run(con, run)
    if send_alerts:
        from propensity.monitoring.alerts import dispatch

        dispatch(workspace, run)
    return run


class _Steps:
    NAMES = ("sources", "features", "model", "done")

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress

    def __call__(self, name: str) -> None:
        if self.progress:
            self.progress(name, self.NAMES.index(name), len(self.NAMES) - 1)


# --------------------------------------------------------------------------------------------- sources
def source_monitors(
    con: duckdb.DuckDBPyConnection,
    workspace: Workspace,
    as_of: datetime,
    settings: MonitoringSettings,
    alerts: AlertSettings,
) -> list[m.MonitorResult]:
    """Freshness (silence, lag) and volume per source: every source in the log and every declared one."""
    windows = settings.volume_windows
    rows = con.execute(
        """
        SELECT source,
               max(available_at) AS last_at,
               min(available_at) AS first_at,
               quantile_cont(epoch(available_at - event_time) / 3600.0, 0.95)
                   FILTER (WHERE available_at > $as_of - INTERVAL 1 DAY) AS lag_p95
        FROM events WHERE available_at <= $as_of AND event_time <= $as_of GROUP BY source
        """,
        {"as_of": as_of},
    ).fetchall()
    counts = con.execute(
        """
        SELECT source, CAST(floor(epoch($as_of - available_at) / 86400) AS BIGINT) AS k, count(*)
        FROM events
        WHERE available_at <= $as_of AND event_time <= $as_of
          AND available_at > $as_of - to_days(CAST($w AS INTEGER) + 1)
        GROUP BY ALL
        """,
        {"as_of": as_of, "w": windows},
    ).fetchall()
    per_window: dict[str, dict[int, int]] = {}
    for source, k, n in counts:
        per_window.setdefault(source or "", {})[int(k)] = int(n)
    seen = {r[0] or "" for r in rows}
    out: list[m.MonitorResult] = []
    for source, last_at, first_at, lag in rows:
        name = source or ""
        silence = (as_of - last_at).total_seconds() / 3600.0
        win = per_window.get(name, {})
        last_day = win.get(0, 0)
        # Only whole windows after the source's first event: a new source is not a volume rise.
        history_days = int((as_of - first_at).total_seconds() // 86400)
        trailing = [win.get(k, 0) for k in range(1, min(windows, history_days) + 1)]
        out += m.freshness_monitors(
            name, silence_hours=silence, lag_p95_hours=lag, events_last_day=last_day, alerts=alerts
        )
        if len(trailing) >= 3:
            out.append(m.volume_monitor(name, last_day=last_day, trailing=trailing, alerts=alerts))
    for declared in workspace.spec.sources:
        if declared.name not in seen:  # declared but never sent anything (by as_of)
            out += m.freshness_monitors(
                declared.name,
                silence_hours=float("inf"),
                lag_p95_hours=None,
                events_last_day=0,
                alerts=alerts,
            )
    return out


# --------------------------------------------------------------------------------------------- samples
def known_customers(con: duckdb.DuckDBPyConnection, as_of: datetime, limit: int) -> list[str]:
    """Customers with an event available by ``as_of``: a seeded hash sample of at most ``limit``."""
    rows = con.execute(
        "SELECT customer_id FROM (SELECT DISTINCT customer_id FROM events "
        f"WHERE available_at <= $t AND event_time <= $t) ORDER BY {sample_key_sql('customer_id', 'monitor')}, customer_id LIMIT $n",
        {"t": as_of, "n": limit},
    ).fetchall()
    return sorted(r[0] for r in rows)


def _spine(customers: list[str], as_of: datetime) -> pa.Table:
    return pa.table(
        {
            "customer_id": pa.array(customers, pa.string()),
            "as_of": pa.array([as_of] * len(customers), pa.timestamp("us", tz="UTC")),
        }
    )


def _table_actions(bundle: Bundle | None) -> list[str]:
    """The bundle's actions trained on a labelled table (``propensity train --table``)."""
    if bundle is None:
        return []
    return sorted(
        n for n, info in bundle.manifest.actions.items() if (info.definition or {}).get("kind") == "table"
    )


def _threshold(info: Any, name: str, settings: MonitoringSettings) -> float:
    """The score above which an action counts as predicted positive for CBPE and the measured figures: the
    declared precision threshold, else the bundle's top ``top_share`` of reference scores, else 0.5."""
    threshold = settings.precision_thresholds.get(name)
    quantiles = info.score_quantiles or []
    if threshold is None and quantiles:
        threshold = float(np.quantile(m.sample_from_quantiles(quantiles), 1.0 - settings.top_share))
    return 0.5 if threshold is None else threshold


def table_monitors(
    workspace: Workspace,
    bundle: Bundle,
    actions: list[str],
    as_of: datetime,
    settings: MonitoringSettings,
    alerts: AlertSettings,
    notes: list[str],
    stored: StoredScores | None,
) -> list[m.MonitorResult]:
    """A labelled table's bundle, monitored as any other: feature drift of the latest ``score --rows`` run's rows
    against the training rows, score drift and CBPE of its scores against the bundle's reference scores, and
    calibration and AUC on its rows whose outcomes are known (the rows carried the label column)."""
    out: list[m.MonitorResult] = []
    if stored is None:
        notes.append(f"{', '.join(actions)}: no score run of bundle {bundle.id} yet: score rows with "
                     "`propensity score --rows FILE` to monitor its scores and features")  # fmt: skip
        return out
    run_id, _, scores = stored
    current = read_sample(supplied_sample_path(workspace, run_id))
    reference = read_sample(training_sample_path(workspace, bundle.id))
    if current is None:
        notes.append(f"score run {run_id} kept no sample of its rows (not scored with `score --rows`): "
                     "feature drift and outcomes of the labelled table not monitored")  # fmt: skip
    elif reference is None:
        notes.append(f"bundle {bundle.id} kept no sample of its training rows (trained before this version): "
                     "feature drift not monitored; train it again to monitor it")  # fmt: skip
    else:
        for name in reference.column_names:
            if name != LABEL and name in current.column_names:
                summary = summarise(name, _comparable(reference.column(name)), bins=settings.bins)
                out += m.feature_monitors(summary, _comparable(current.column(name)), alerts)
    for name in actions:
        info = bundle.manifest.actions[name]
        threshold = _threshold(info, name, settings)
        test_auc = info.metrics.get("model", {}).get("roc_auc")
        now = scores.get(name)
        if now is None or not len(now):
            notes.append(f"{name}: score run {run_id} has no scores for it")
            continue
        if info.score_quantiles:
            out.append(m.score_drift_monitor(name, info.score_quantiles, now, alerts, bins=settings.bins,
                                             source=f"score run {run_id}"))  # fmt: skip
        cbpe = m.expected_performance_monitor(name, estimate_performance(now, threshold=threshold),
                                              test_auc=test_auc, alerts=alerts, min_rows=settings.min_labelled_rows)  # fmt: skip
        out += [cbpe] if cbpe else []
        column = SCORE_PREFIX + name
        if current is not None and LABEL in current.column_names and column in current.column_names:
            known = current.filter(pc.is_valid(current.column(LABEL)))
            if known.num_rows:
                p = known.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
                y = known.column(LABEL).to_numpy(zero_copy_only=False).astype(np.float64)
                period = _period_stats(as_of, p, y, threshold)
                out += m.calibration_monitors(name, [period], test_auc=test_auc, alerts=alerts,
                                              min_rows=settings.min_labelled_rows)  # fmt: skip
    return out


def _comparable(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Booleans as 0/1: the training rows keep a yes/no column as booleans, scored rows as the model reads it."""
    return column.cast(pa.float64()) if pa.types.is_boolean(column.type) else column


def _production_bundle(workspace: Workspace, notes: list[str]) -> Bundle | None:
    registry = Registry(workspace)
    bundle_id = registry.production()
    if bundle_id is None:
        notes.append("no production bundle: score drift, calibration and CBPE not monitored")
        return None
    return load_bundle(registry.path(bundle_id))


# --------------------------------------------------------------------------------------------- reference
def reference_times(
    workspace: Workspace, bundle: Bundle | None, settings: MonitoringSettings
) -> list[datetime]:
    """``monitoring.reference.at``, else the production bundle's latest ``reference.cutoffs`` grid cutoffs."""
    if settings.reference.at:
        return sorted(settings.reference.at)
    if bundle is None:
        return []
    last = max(
        datetime.fromisoformat(info.training_window["last_cutoff"])
        for info in bundle.manifest.actions.values()
    )
    slide = workspace.spec.training.spine.slide.timedelta
    return sorted(last - k * slide for k in range(settings.reference.cutoffs))


def feature_reference(
    con: duckdb.DuckDBPyConnection,
    workspace: Workspace,
    bundle: Bundle | None,
    features: list[Any],
    settings: MonitoringSettings,
    notes: list[str],
) -> dict[str, FeatureSummary] | None:
    """Per-feature reference summaries, computed once per (features, times, sample) and kept as JSON."""
    times = reference_times(workspace, bundle, settings)
    if not times:
        notes.append("no reference for feature drift: promote a bundle or set monitoring.reference.at")
        return None
    defs = [f.canonical() for f in features]
    key_body = {"v": REFERENCE_VERSION, "features": defs, "times": [t.isoformat() for t in times],
                "sample": settings.sample_customers, "bins": settings.bins}  # fmt: skip
    key = content_hash(key_body)
    path = workspace.state_dir / "monitoring" / "references" / f"{key}.json"
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
        return {name: FeatureSummary.from_json(s) for name, s in data["features"].items()}
    parts = [_spine(known_customers(con, t, settings.sample_customers), t) for t in times]
    table = compute_features(con, features, pa.concat_tables(parts))
    if table.num_rows == 0:
        notes.append("no customers at the reference times: feature drift not monitored")
        return None
    summaries = {f.name: summarise(f.name, table.column(f.name), bins=settings.bins) for f in features}
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {**key_body, "rows": table.num_rows, "features": {k: s.to_json() for k, s in summaries.items()}}
    _write_atomic(path, json.dumps(body, allow_nan=False))
    return summaries


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# --------------------------------------------------------------------------------------------- model
StoredScores = tuple[str, str, dict[str, np.ndarray]]  # run id, model version, eligible scores per action


def latest_stored_scores(workspace: Workspace, as_of: datetime, notes: list[str]) -> StoredScores | None:
    """The eligible scores per action of the latest complete scoring run as of ``as_of`` or earlier, if any."""
    try:
        from propensity.scoring.score_store import open_score_store

        store = open_score_store(workspace)
        # The newest complete run that scored the data as of this monitoring time or earlier.
        run = next((r for r in store.runs() if r.status == "complete" and r.as_of <= as_of), None)
        if run is None:
            return None
        rows = store.read_run(run.run_id)
    except PropensityError as exc:
        notes.append(f"score store not read ({exc}); scores are computed from the bundle instead")
        return None
    rows = rows.filter(pc.and_(pc.equal(rows.column("eligible"), True), pc.is_valid(rows.column("score"))))
    actions = rows.column("action").to_numpy(zero_copy_only=False)
    score = rows.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    per_action = {str(a): score[actions == a] for a in np.unique(actions)}
    return run.run_id, run.model_version, per_action


def _grid_cutoff_at_or_before(t: datetime, align: datetime, slide: timedelta) -> datetime:
    k = (t - align) // slide
    return align + k * slide


def _current_rows(
    con: duckdb.DuckDBPyConnection,
    action: Action,
    as_of: datetime,
    workspace: Workspace,
    trigger_window: timedelta,
) -> pa.Table:
    """The action's eligible rows now: a grid action's at the latest grid cutoff ≤ as_of; a triggered action's
    (campaign sends) over the last ``trigger_window``, long enough to hold the mix of trigger kinds (promotion
    and newsletter weeks) its test split had."""
    spine = workspace.spec.training.spine
    slide, align = spine.slide.timedelta, spine.align
    latest = _grid_cutoff_at_or_before(as_of, align, slide)
    # Eligibility does not need labels: with a data end far ahead every row counts as matured (the label
    # column of these rows is ignored).
    ts = pa.timestamp("us", "UTC")
    if action.trigger is None:
        rows = build_labels(con, action, [latest], slide=slide, align=align, data_end=latest + 3650 * DAY)
    else:
        steps = max(1, -(-trigger_window // slide))
        window = [latest - k * slide for k in range(steps, -1, -1)]
        rows = build_labels(con, action, window, slide=slide, align=align, data_end=latest + 3650 * DAY)
        rows = rows.filter(pc.greater(rows.column("as_of"), pa.scalar(as_of - trigger_window, ts)))
    return rows.filter(pc.less_equal(rows.column("as_of"), pa.scalar(as_of, ts)))


def matured_periods(
    action: Action, as_of: datetime, *, align: datetime, slide: timedelta, start: datetime, count: int
) -> list[datetime]:
    """The latest ``count`` grid periods (by their first cutoff) whose every label has matured by ``as_of``
    (the label horizon: :func:`propensity.events.clock.label_horizon`, never the wall clock).

    A grid action's rows sit on the period's cutoff p (matured at p + span); a triggered action's anywhere in
    [p, p + slide) (all matured at p + slide + span).
    """
    span = action.span.timedelta + (slide if action.trigger is not None else timedelta(0))
    out: list[datetime] = []
    p = _grid_cutoff_at_or_before(as_of - span, align, slide)
    assert is_matured(p, span, as_of)
    while len(out) < count and p >= start - slide:
        out.append(p)
        p -= slide
    return sorted(out)


class _PeriodCache:
    """Per-period calibration figures of one bundle, kept as JSON, so a matured period is computed once instead
    of at every run. Each entry records how many events (available by then) happened before the period's labels
    closed; events are only ever appended, so a late or backfilled event that could change the period's
    features or labels changes that count, and the period is computed again."""

    def __init__(self, workspace: Workspace, bundle_id: str, key: dict[str, Any]) -> None:
        self.folder = workspace.state_dir / "monitoring" / "periods" / bundle_id
        self.suffix = content_hash(key, 12)

    def _path(self, action: str, period: datetime) -> Path:
        return self.folder / action / f"{period.strftime('%Y%m%dT%H%M%SZ')}-{self.suffix}.json"

    def get(self, action: str, period: datetime, events: int) -> dict[str, Any] | None:
        path = self._path(action, period)
        if not path.exists():
            return None
        entry: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return entry["stats"] if entry.get("events") == events else None

    def put(self, action: str, period: datetime, events: int, stats: dict[str, Any]) -> None:
        path = self._path(action, period)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, dumps({"events": events, "stats": stats}))


class _EventCounts:
    """How many events available by ``as_of`` happened before a given day (one grouped query, then lookups)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, as_of: datetime) -> None:
        rows = con.execute(
            "SELECT CAST(floor(epoch(event_time) / 86400) AS BIGINT) AS d, count(*) FROM events "
            "WHERE available_at <= $t AND event_time <= $t GROUP BY 1 ORDER BY 1",
            {"t": as_of},
        ).fetchall()
        self.days = np.array([r[0] for r in rows], dtype=np.int64)
        self.cumulative = np.cumsum([r[1] for r in rows]).astype(np.int64)

    def before(self, t: datetime) -> int:
        """Events on days up to and including ``t``'s day."""
        i = int(np.searchsorted(self.days, int(t.timestamp() // 86400), side="right"))
        return int(self.cumulative[i - 1]) if i else 0


def _period_stats(period: datetime, p: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, Any]:
    if len(p) == 0:
        return {"as_of": period.isoformat(), "n": 0}
    measured = measured_performance(p, y, threshold=threshold)
    return {
        "as_of": period.isoformat(), "n": len(p), "positives": int(y.sum()),
        "ece": expected_calibration_error(p, y), "roc_auc": measured["roc_auc"],
        "measured": measured, "expected": estimate_performance(p, threshold=threshold),
        "reliability": reliability_curve(p, y),
    }  # fmt: skip


def model_monitors(
    con: duckdb.DuckDBPyConnection,
    workspace: Workspace,
    bundle: Bundle,
    features: list[Any],
    sample: list[str],
    as_of: datetime,
    settings: MonitoringSettings,
    alerts: AlertSettings,
    notes: list[str],
    *,
    stored: StoredScores | None = None,
) -> list[m.MonitorResult]:
    """Score drift, CBPE estimates, and calibration/AUC on matured labels for every action of the bundle.

    Current scores come from ``stored`` (the latest scoring run of this bundle) when it has the action, else
    from scoring the eligible sampled customers now with the bundle. Each matured period is labelled with the
    action's label code for the customers known at its start (the same seeded sample), scored by the bundle,
    and its figures cached per bundle.
    """
    spine_settings = workspace.spec.training.spine
    slide, align = spine_settings.slide.timedelta, spine_settings.align
    start = con.execute("SELECT min(event_time) FROM events").fetchall()[0][0]
    samples: dict[datetime, pa.Array] = {as_of: pa.array(sample, pa.string())}

    def sample_at(t: datetime) -> pa.Array:
        if t not in samples:
            samples[t] = pa.array(known_customers(con, t, settings.sample_customers), pa.string())
        return samples[t]

    def in_sample(rows: pa.Table, t: datetime) -> pa.Table:
        return rows.filter(pc.is_in(rows.column("customer_id"), sample_at(t)))

    counts = _EventCounts(con, as_of)
    # Labels mature by the newest event seen, not by the wall clock: a window past the data's end is open.
    horizon = label_horizon(con, as_of=as_of, declared=spine_settings.data_end) or start
    plans: dict[str, dict[str, Any]] = {}
    parts: list[pa.Table] = []  # (customer_id, as_of) rows to compute features for
    for name, info in sorted(bundle.manifest.actions.items()):
        if (info.definition or {}).get("kind") == "table":
            continue  # a labelled table's model has no event-defined outcome to monitor here (not built yet)
        action = Action.model_validate(info.definition)
        threshold = _threshold(info, name, settings)
        cache = _PeriodCache(workspace, bundle.id, {"v": REFERENCE_VERSION, "sample": settings.sample_customers,
                                                     "threshold": round(threshold, 9)})  # fmt: skip
        plan: dict[str, Any] = {"info": info, "threshold": threshold, "cache": cache, "cached": {}, "missing": {},
                                "events": {}}  # fmt: skip
        try:
            if stored is None or name not in stored[2]:
                plan["current"] = in_sample(_current_rows(con, action, as_of, workspace,
                                                          settings.trigger_window.timedelta), as_of)  # fmt: skip
                parts.append(plan["current"].select(["customer_id", "as_of"]))
            for period in matured_periods(action, horizon, align=align, slide=slide, start=start,
                                          count=settings.calibration_periods):  # fmt: skip
                closes = (
                    period + action.span.timedelta + (slide if action.trigger is not None else timedelta(0))
                )
                plan["events"][period] = counts.before(closes)
                hit = cache.get(name, period, plan["events"][period])
                if hit is not None:
                    plan["cached"][period] = hit
                    continue
                rows = build_labels(con, action, [period], slide=slide, align=align, data_end=horizon)
                plan["missing"][period] = in_sample(rows, period)
                parts.append(plan["missing"][period].select(["customer_id", "as_of"]))
        except (PropensityError, ValueError) as exc:
            notes.append(f"{name}: rows for score and calibration monitors could not be built ({exc})")
            continue
        plans[name] = plan
    table = None
    if any(t.num_rows for t in parts):
        spine = pa.concat_tables([t.cast(parts[0].schema) for t in parts]).group_by(["customer_id", "as_of"])
        table = compute_features(con, features, spine.aggregate([]))
        index = {(c, t): i for i, (c, t) in enumerate(zip(table.column("customer_id").to_pylist(),
                                                          table.column("as_of").to_pylist(), strict=True))}  # fmt: skip

    def scores(name: str, part: pa.Table) -> np.ndarray:
        if part.num_rows == 0 or table is None:
            return np.array([], dtype=np.float64)
        idx = [index[(c, t)] for c, t in zip(part.column("customer_id").to_pylist(),
                                             part.column("as_of").to_pylist(), strict=True)]  # fmt: skip
        return np.asarray(bundle.predict(name, table.take(pa.array(idx, pa.int64()))), dtype=np.float64)

    out: list[m.MonitorResult] = []
    for name, plan in plans.items():
        info, threshold = plan["info"], plan["threshold"]
        quantiles = info.score_quantiles or []
        test_auc = info.metrics.get("model", {}).get("roc_auc")
        if "current" in plan:
            now, source = scores(name, plan["current"]), "bundle on the eligible sample"
        else:
            assert stored is not None
            now, source = stored[2][name], f"score run {stored[0]}"
        if quantiles and len(now):
            out.append(m.score_drift_monitor(name, quantiles, now, alerts, bins=settings.bins, source=source))
        if len(now):
            estimate = estimate_performance(now, threshold=threshold)
            cbpe = m.expected_performance_monitor(
                name, estimate, test_auc=test_auc, alerts=alerts, min_rows=settings.min_labelled_rows
            )
            out += [cbpe] if cbpe else []
        periods = dict(plan["cached"])
        for period, rows in plan["missing"].items():
            y = rows.column("label").to_numpy(zero_copy_only=False).astype(np.float64)
            periods[period] = _period_stats(period, scores(name, rows), y, threshold)
            plan["cache"].put(name, period, plan["events"][period], periods[period])
        history = [periods[p] for p in sorted(periods) if periods[p]["n"] > 0]
        out += m.calibration_monitors(
            name, history, test_auc=test_auc, alerts=alerts, min_rows=settings.min_labelled_rows
        )
    return out
