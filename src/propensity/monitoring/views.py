"""The state of a workspace as plain JSON, for the console's overview, model and monitoring pages.

Each function reads what the stages below have stored (the registry and its bundles, the event log, the score
store, the activation ledger, the stored monitor runs) and computes nothing expensive: a page built from them
loads in well under a second on the quickstart workspace.

* :func:`overview` — production and canary bundles per action (AUC, ECE, age), event freshness and volume per
  source, open alerts ranked by severity, the last scoring run, the last delivery per destination;
* :func:`models_list` and :func:`model_view` — the registry's bundles, and one bundle's curves (reliability,
  gains and lift, score distribution at training vs in the latest run it scored, feature importance), its
  candidates (the champion and the challengers it was chosen over), lineage and registry history;
* :func:`monitoring_view` — drift and calibration over the stored monitor runs, estimated (CBPE) vs measured
  performance per matured period, and the history of firing monitors.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow.compute as pc

from propensity.core.errors import PropensityError
from propensity.core.manifest import BundleManifest
from propensity.events.log import open_event_log
from propensity.monitoring.ranking import DATA_FAILURES, explained_by
from propensity.monitoring.store import MonitorRun, load_runs
from propensity.scoring.reading import latest, memo, run_rows, store_runs
from propensity.workspace import Workspace

SEVERITY = {"alert": 2, "warning": 1, "ok": 0}
HIST_BINS = 20


def _finite(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _age_s(iso: str | None, now: datetime) -> float | None:
    if not iso:
        return None
    try:
        t = datetime.fromisoformat(iso)
    except ValueError:
        return None
    return (now - (t if t.tzinfo else t.replace(tzinfo=UTC))).total_seconds()


def _headline(info: dict[str, Any]) -> dict[str, Any]:
    m = (info.get("metrics") or {}).get("model") or {}
    return {
        "roc_auc": _finite(m.get("roc_auc")),
        "ece": _finite(m.get("ece")),
        "base_rate": _finite(m.get("base_rate")),
        "test_rows": m.get("n"),
        "kind": (info.get("model") or {}).get("kind", "lightgbm"),
    }


# ------------------------------------------------------------------------------------------------ overview
def _bundles(workspace: Workspace, canary: dict[str, Any] | None, now: datetime) -> dict[str, Any]:
    from propensity.registry.registry import Registry

    registry = Registry(workspace)
    entries = registry.entries()
    by_id = {e.id: e for e in entries}
    production = registry.production()
    canary_id = (canary or {}).get("model_version")
    if canary_id is None and workspace.spec.serving.canary is not None:
        ref = workspace.spec.serving.canary.bundle
        canary_id = next((e.id for e in entries if ref and e.id.startswith(ref)), None)
    rows = []
    actions = sorted({a for e in entries if e.manifest is not None for a in e.manifest.actions})
    for action in actions:
        row: dict[str, Any] = {"action": action}
        for role, bid in (("production", production), ("canary", canary_id)):
            e = by_id.get(bid or "")
            info = _action_json(e.manifest, action) if e else None
            row[role] = (
                None
                if e is None or info is None
                else {
                    "bundle": e.id,
                    **_headline(info),
                    "created_at": e.created_at,
                    "age_s": _age_s(e.created_at, now),
                }
            )
        rows.append(row)
    return {
        "production": production,
        "canary": canary_id,
        "canary_share": (canary or {}).get("share")
        or (workspace.spec.serving.canary.share if workspace.spec.serving.canary else None),
        "candidates": sum(e.stage == "candidate" for e in entries),
        "actions": rows,
    }


def _sources(workspace: Workspace, now: datetime, con: Any) -> dict[str, Any]:
    """Per source: the last available event, its silence, the events in the 24 hours before its newest event
    (its last day of data), the total."""
    try:
        heads = con.execute(
            "SELECT source, max(available_at), count(*), max(event_time) FROM events GROUP BY source ORDER BY source"
        ).fetchall()
        rows = []
        for source, last, total, newest in heads:
            day = 0
            if newest is not None:  # the source's last day of data: a late event does not shrink it to one
                day = con.execute(
                    "SELECT count(*) FROM events WHERE source = ? AND event_time > ?",
                    [source, newest - timedelta(days=1)],
                ).fetchall()[0][0]
            rows.append((source, last, total, day, newest))
    except Exception as exc:  # no event log yet, or a store that cannot be read: say so, not a 500
        return {"sources": [], "note": f"event log not readable: {type(exc).__name__}"}
    out = []
    for source, last, total, last_day, newest in rows:
        out.append(
            {
                "source": source,
                "last_available_at": last.isoformat() if last else None,
                "silent_s": (now - last).total_seconds() if last else None,
                "events": int(total),
                "events_last_day": int(last_day),
                "newest_event_time": newest.isoformat() if newest else None,
            }
        )
    declared = {s.name for s in workspace.spec.sources}
    for name in sorted(declared - {r["source"] for r in out}):
        out.append(
            {
                "source": name,
                "last_available_at": None,
                "silent_s": None,
                "events": 0,
                "events_last_day": 0,
                "newest_event_time": None,
            }
        )
    return {"sources": out}


def rank_alerts(run: MonitorRun | None) -> list[dict[str, Any]]:
    """The firing results of ``run``, most severe first: failures of the data itself (freshness, volume) first,
    as `propensity monitor` ranks them (:mod:`propensity.monitoring.ranking`), the drift they explain last (each
    with ``explained_by``); within each, alerts before warnings, then by how far past its threshold each value is
    (value ÷ the threshold it crossed)."""
    if run is None:
        return []
    firing = run.firing("warning")
    causes = {r.key for r in firing if r.name in DATA_FAILURES}
    explained = explained_by(firing)
    out: list[dict[str, Any]] = []
    for r in firing:
        limit = r.alert if r.status == "alert" else r.warning
        over = _finite(r.value)
        ratio = (over / limit) if over is not None and limit else (math.inf if over is None else over)
        out.append(
            {
                "monitor": r.name,
                "subject": r.subject,
                "status": r.status,
                "value": _finite(r.value),
                "warning": r.warning,
                "alert": r.alert,
                "ratio": ratio if math.isfinite(ratio) else None,
                "explained_by": explained.get(r.key),
            }
        )

    def severity(a: dict[str, Any]) -> tuple[int, int, float]:
        ratio = a["ratio"]
        key = f"{a['monitor']}:{a['subject']}"
        tier = 0 if key in causes else 2 if a["explained_by"] else 1
        return tier, -SEVERITY[str(a["status"])], -(float(ratio) if ratio is not None else math.inf)

    out.sort(key=severity)
    return out


def _latest_monitor_run(workspace: Workspace, limit: int | None = 1, con: Any = None) -> list[MonitorRun]:
    try:
        if con is not None:
            return load_runs(con, limit=limit, order="finished_at" if limit == 1 else "as_of")
        with open_event_log(workspace).connection(read_only=True) as own:
            return load_runs(own, limit=limit, order="finished_at" if limit == 1 else "as_of")
    except Exception:  # a workspace whose monitors never ran (no tables), or an unreadable file
        return []


def overview(
    workspace: Workspace, *, canary: dict[str, Any] | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """The overview page's numbers. ``canary`` is the running server's (``{model_version, share}``), if any."""
    from propensity.activation.run import ledger
    from propensity.scoring.score_store import open_score_store

    now = now or datetime.now(UTC)

    def read() -> tuple[list[MonitorRun], dict[str, Any]]:
        with open_event_log(workspace).connection(read_only=True) as con:
            return _latest_monitor_run(workspace, 1, con), _sources(workspace, now, con)

    monitored, sources = memo(workspace, "overview", read)
    runs = store_runs(workspace, open_score_store(workspace))
    for s in sources["sources"]:  # silence is measured from now, cached or not
        s["silent_s"] = (
            None
            if s["last_available_at"] is None
            else (now - datetime.fromisoformat(s["last_available_at"])).total_seconds()
        )
    run = monitored[-1] if monitored else None
    last, complete = latest(runs, None), latest(runs)
    scoring = None
    if last is not None:
        scoring = {
            "run_id": last.run_id,
            "status": last.status,
            "scored_at": last.scored_at.isoformat(),
            "as_of": last.as_of.isoformat(),
            "rows": last.rows,
            "model_version": last.model_version,
            "age_s": (now - last.scored_at).total_seconds(),
            "last_complete": None if complete is None else complete.run_id,
        }
    deliveries = [
        {
            "destination": d,
            "run_id": v["run_id"],
            "status": v["status"],
            "at": v["at"],
            "rows": (v.get("report") or {}).get("rows"),
            "message": (v.get("report") or {}).get("message"),
        }
        for d, v in sorted(ledger(workspace).latest().items())
    ]
    declared = {d.name: d.type for d in workspace.spec.destinations}
    for name in sorted(set(declared) - {d["destination"] for d in deliveries}):
        deliveries.append(
            {
                "destination": name,
                "run_id": None,
                "status": "never",
                "at": None,
                "rows": None,
                "message": None,
            }
        )
    return {
        "project": workspace.spec.project,
        "now": now.isoformat(),
        "bundles": _bundles(workspace, canary, now),
        "events": sources,
        "alerts": {
            "run_id": run.run_id if run else None,
            "as_of": run.as_of.isoformat() if run else None,
            "status": run.status if run else None,
            "open": rank_alerts(run),
        },
        "scoring": scoring,
        "deliveries": deliveries,
    }


# ------------------------------------------------------------------------------------------------ models
def models_list(workspace: Workspace, *, now: datetime | None = None) -> list[dict[str, Any]]:
    from propensity.registry.registry import Registry

    now = now or datetime.now(UTC)
    return [
        {
            "id": e.id,
            "stage": e.stage,
            "created_at": e.created_at,
            "age_s": _age_s(e.created_at, now),
            "feature_set_version": e.manifest.feature_set_version if e.manifest else None,
            "actions": {a: _headline(i) for a, i in sorted(_actions_json(e.manifest).items())},
        }
        for e in Registry(workspace).entries()
    ]


def _candidates(info: dict[str, Any]) -> list[dict[str, Any]]:
    """The models compared for an action: the bundle's candidates (champion first) when it records them, else
    the served model and the logistic baseline it is measured against."""
    out = []
    how = ((info.get("stages") or {}).get("champion") or {}).get("how")
    for c in info.get("candidates") or []:
        fig = c.get("calibration_split") or {}
        out.append(
            {
                "name": c.get("candidate"),
                "kind": c.get("kind"),
                "champion": bool(c.get("champion")),
                "calibration": c.get("calibration"),
                "log_loss": _finite(c.get("calibration_log_loss")),
                "roc_auc": _finite(fig.get("roc_auc")),
                "ece": _finite(fig.get("ece")),
                "where": f"calibration split ({how})" if how else "calibration split",
            }
        )
    if out:
        return sorted(
            out, key=lambda c: (not c["champion"], c["log_loss"] if c["log_loss"] is not None else 1e9)
        )
    metrics = info.get("metrics") or {}
    kind = (info.get("model") or {}).get("kind", "lightgbm")
    for name, champion in (("model", True), ("baseline", False)):
        m = metrics.get(name)
        if m:
            out.append(
                {
                    "name": kind if name == "model" else "logistic baseline",
                    "kind": kind if champion else "logistic",
                    "champion": champion,
                    "calibration": (info.get("calibration") or {}).get(name, {}).get("method")
                    if isinstance((info.get("calibration") or {}).get(name), dict)
                    else None,
                    "log_loss": _finite(m.get("log_loss")),
                    "roc_auc": _finite(m.get("roc_auc")),
                    "ece": _finite(m.get("ece")),
                    "where": "test split",
                }
            )
    return out


def _backtest(info: dict[str, Any]) -> list[dict[str, Any]]:
    """The rolling-origin backtest's folds (bundles that record one): per origin, the served procedure's and the
    logistic baseline's figures on the period after it, or why the fold was skipped."""
    out = []
    for f in (info.get("backtest") or {}).get("folds") or []:
        model, base = f.get("model") or {}, f.get("baseline") or {}
        evaluated = f.get("evaluated") or {}
        out.append(
            {
                "origin": f.get("origin"),
                "skipped": f.get("skipped"),
                "test_split": bool(f.get("test_split")),
                "rows": evaluated.get("rows"),
                "positives": evaluated.get("positives"),
                "calibration": f.get("calibration"),
                "roc_auc": _finite(model.get("roc_auc")),
                "log_loss": _finite(model.get("log_loss")),
                "ece": _finite(model.get("ece")),
                "baseline_roc_auc": _finite(base.get("roc_auc")),
                "baseline_log_loss": _finite(base.get("log_loss")),
            }
        )
    return out


def model_choice(info: dict[str, Any]) -> dict[str, Any]:
    """How an action's served model was chosen, from its manifest entry: the served kind, every candidate
    (champion first), why the champion won and the plain logistic reference it was held against, the backtest
    folds and training's warnings. Bundles that predate candidates give the model and its baseline on the test
    split, and no reason."""
    served = info.get("model") or {}
    champion = info.get("champion") or {}
    reference = _finite(champion.get("baseline_calibration_log_loss"))
    return {
        "kind": served.get("kind", "lightgbm"),
        "trees": served.get("trees"),
        "weights": served.get("weights"),
        "candidates": _candidates(info),
        "champion": champion.get("candidate"),
        "why": champion.get("why"),
        # The plain logistic regression under the same protocol on the calibration split: a reference, not a
        # candidate.
        "reference": None
        if reference is None
        else {"name": "plain logistic (reference)", "log_loss": reference, "where": "calibration split"},
        "backtest": _backtest(info),
        "procedure": (info.get("backtest") or {}).get("procedure"),
        "warnings": [str(w) for w in info.get("warnings") or []],
    }


def _now_histogram(workspace: Workspace, bundle_id: str) -> dict[str, Any]:
    """Per action, a 20-bin histogram (shares) of the eligible scores of the latest complete run this bundle made."""
    from propensity.scoring.score_store import open_score_store

    store = open_score_store(workspace)
    run = next(
        (r for r in store_runs(workspace, store) if r.status == "complete" and r.model_version == bundle_id),
        None,
    )
    if run is None:
        return {"run_id": None, "actions": {}}
    rows = run_rows(store, run.run_id)
    rows = rows.filter(
        pc.and_(pc.fill_null(rows.column("eligible"), False), pc.is_valid(rows.column("score")))
    )
    out = {}
    for action in sorted(set(rows.column("action").to_pylist())):
        s = (
            rows.filter(pc.equal(rows.column("action"), action))
            .column("score")
            .to_numpy(zero_copy_only=False)
        )
        counts, _ = np.histogram(s, bins=HIST_BINS, range=(0.0, 1.0))
        out[action] = {"n": int(s.size), "shares": (counts / max(1, s.size)).tolist()}
    return {"run_id": run.run_id, "as_of": run.as_of.isoformat(), "actions": out}


def model_view(workspace: Workspace, bundle_id: str) -> dict[str, Any]:
    """One bundle, everything the model page shows (see the module docstring)."""
    from propensity.registry.bundle import read_manifest
    from propensity.registry.registry import Registry

    registry = Registry(workspace)
    bid = registry.resolve(bundle_id)
    manifest = read_manifest(registry.path(bid)).to_json()  # the console shows the JSON as stored
    entry = next((e for e in registry.entries() if e.id == bid), None)
    now_hist = memo(workspace, f"now-histogram-{bid}", lambda: _now_histogram(workspace, bid))
    actions = {}
    for name, info in sorted(manifest.get("actions", {}).items()):
        m = (info.get("metrics") or {}).get("model") or {}
        hist = m.get("histogram") or {}
        counts = np.asarray(hist.get("counts") or [], dtype=np.float64)
        actions[name] = {
            "headline": _headline(info),
            "definition": info.get("definition"),
            "reliability": m.get("reliability") or [],
            "deciles": m.get("deciles") or [],
            "training_hist": {
                "edges": hist.get("edges") or [],
                "shares": (counts / max(1.0, counts.sum())).tolist(),
            },
            "now_hist": now_hist["actions"].get(name),
            "importance": (info.get("importance") or [])[:20],
            "candidates": _candidates(info),
            "choice": model_choice(info),
            "training_window": info.get("training_window"),
            "counts": info.get("counts"),
            "calibration": info.get("calibration"),
        }
    history = [h for h in registry.history() if h.get("bundle") == bid or h.get("from") == bid]
    return {
        "id": bid,
        "stage": entry.stage if entry else None,
        "production": registry.production(),
        "created_at": manifest.get("created_at"),
        "lineage": {
            "training_set": manifest.get("training_set"),
            "feature_set_version": manifest.get("feature_set_version"),
            "data": manifest.get("data"),
            "code_version": manifest.get("code_version"),
            "seed": manifest.get("seed"),
            "project": manifest.get("project"),
            "features": len(manifest.get("features") or []),
        },
        "now_run": {"run_id": now_hist["run_id"], "as_of": now_hist.get("as_of")},
        "actions": actions,
        "history": history,
    }


# ------------------------------------------------------------------------------------------------ monitoring
def _period(p: dict[str, Any]) -> dict[str, Any]:
    measured, expected = p.get("measured") or {}, p.get("expected") or {}
    return {
        "as_of": p.get("as_of"),
        "rows": p.get("n"),
        "ece": _finite(p.get("ece")),
        "auc": _finite(p.get("roc_auc")),
        "expected_auc": _finite(expected.get("expected_auc")),
        "realised_rate": _finite(measured.get("rate")),
        "expected_rate": _finite(expected.get("expected_rate")),
        "precision": _finite(measured.get("precision")),
        "expected_precision": _finite(expected.get("expected_precision")),
    }


def monitoring_view(workspace: Workspace, *, limit: int = 60) -> dict[str, Any]:
    """Drift and calibration over the stored runs (oldest first), estimated vs measured performance of the
    latest run's matured periods, and the firing history."""
    runs = memo(workspace, f"monitor-runs-{limit}", lambda: _latest_monitor_run(workspace, limit))
    times = [r.as_of.isoformat() for r in runs]

    def series(name: str) -> dict[str, list[float | None]]:
        subjects = sorted({x.subject for r in runs for x in r.results if x.name == name})
        out: dict[str, list[float | None]] = {}
        for s in subjects:
            out[s] = [_finite(getattr(r.result(name, s), "value", None)) for r in runs]
        return out

    psi = series("feature_psi")
    last = {k: v[-1] for k, v in psi.items() if v and v[-1] is not None}
    top = sorted(last, key=lambda k: -(last[k] or 0.0))[:8]
    newest = runs[-1] if runs else None
    performance: dict[str, Any] = {}
    if newest is not None:
        for r in newest.results:
            if r.name in ("calibration_ece", "auc_drop", "expected_auc_drop"):
                d = r.details or {}
                perf = performance.setdefault(r.subject, {"periods": [], "expected": None})
                if r.name == "calibration_ece" and d.get("periods"):
                    perf["periods"] = [_period(p) for p in d["periods"]]
                    perf["reliability"] = {
                        "first": d["periods"][0].get("reliability"),
                        "last": d["periods"][-1].get("reliability"),
                    }
                if r.name == "expected_auc_drop":
                    perf["expected"] = {
                        "expected_auc": _finite(d.get("expected_auc")),
                        "test_auc": _finite(d.get("test_auc")),
                        "expected_rate": _finite(d.get("expected_rate")),
                        "n": d.get("n"),
                    }
    history = [
        {
            "run_id": r.run_id,
            "as_of": r.as_of.isoformat(),
            "status": r.status,
            "firing": [
                {"monitor": x.name, "subject": x.subject, "status": x.status, "value": _finite(x.value)}
                for x in r.firing("warning")
            ],
        }
        for r in reversed(runs)
    ]
    return {
        "runs": len(runs),
        "times": times,
        "feature_psi": {k: psi[k] for k in top},
        "score_psi": series("score_psi"),
        "calibration_ece": series("calibration_ece"),
        "auc_drop": series("auc_drop"),
        "expected_auc_drop": series("expected_auc_drop"),
        "performance": performance,
        "history": history,
        "open": rank_alerts(newest),
    }


def require(value: Any, what: str) -> Any:
    if value is None:
        raise PropensityError(what)
    return value


def _actions_json(manifest: BundleManifest | None) -> dict[str, Any]:
    """A manifest's per-action entries as their stored JSON (empty for an unreadable manifest)."""
    return dict(manifest.to_json().get("actions") or {}) if manifest is not None else {}


def _action_json(manifest: BundleManifest | None, action: str) -> dict[str, Any] | None:
    return _actions_json(manifest).get(action)
