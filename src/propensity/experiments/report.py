"""The experiment report: per action under a holdout, outcomes, lift with 95% intervals per segment, and uplift.

One self-contained HTML file (inline SVG, no scripts) plus the same numbers as JSON, written to
``.propensity/reports/experiments-<run>.{html,json}`` (and ``experiments.{html,json}`` for the latest).

JSON layout: ``_meta`` (run, data end, methods) and ``actions``: one entry per action with ``experiment``,
``control_share``, ``scored_rows``, ``matured_rows``, ``lift`` (segment → :class:`~propensity.experiments.lift.Lift`
as JSON, ``(all)`` first) and ``uplift`` (:class:`~propensity.experiments.uplift.UpliftResult` as JSON, or
``{"skipped": reason}``).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from propensity.core.errors import PropensityError
from propensity.core.holdout import TREATMENT
from propensity.core.html import COLORS, CSS, W, axes, legend, line, table
from propensity.events.log import open_event_log
from propensity.experiments.lift import Lift, lift_by_segment
from propensity.experiments.outcomes import data_end, outcomes
from propensity.experiments.uplift import UpliftDataError, UpliftResult, evaluate_uplift
from propensity.training.encoding import FeatureEncoder
from propensity.workspace import Workspace

LIFT_METHOD = (
    "absolute lift: Newcombe hybrid score interval (Wilson per group); "
    "relative lift: log-ratio (Katz) interval, 0.5 added to both groups when one has no outcome"
)


class NoScoresError(PropensityError):
    """There is no scoring run to report on."""


# ------------------------------------------------------------------------------------------------ score rows
def load_score_rows(workspace: Workspace, run_id: str | None = None) -> tuple[str, pa.Table]:
    """The rows of scoring run ``run_id`` (default: the latest complete run) from the workspace's score store."""
    from propensity.scoring.score_store import open_score_store

    store = open_score_store(workspace)
    if run_id is None:
        run = store.latest_run(status="complete")
        if run is None:
            raise NoScoresError("no complete scoring run yet; run `propensity score` first")
    else:
        run = store.get_run(run_id)
    # Each row carries the time it is about (its as_of: a backfilled run's is in the past; a --triggers run's is
    # each send's); the outcome window opens there.
    return run.run_id, store.read_run(run.run_id)


# ------------------------------------------------------------------------------------------------ numbers
def _uplift_for(
    workspace: Workspace, con: Any, rows: pa.Table, seed: int
) -> tuple[UpliftResult | None, str | None]:
    """Cross-fitted two-model uplift on the features as of each row's scoring time."""
    spec = workspace.spec
    if not spec.features:
        return None, "the project declares no features"
    from propensity.features.offline import compute_features

    spine = rows.select(["customer_id", "window_start"]).rename_columns(["customer_id", "as_of"])
    feats = compute_features(con, spec.features, spine)
    names = [f.name for f in spec.features]
    x = FeatureEncoder.fit(feats, names).matrix(feats)
    treated = np.asarray(pc.equal(rows.column("holdout_group"), TREATMENT).to_numpy(zero_copy_only=False))
    y = rows.column("outcome").to_numpy().astype(np.int64)
    ids = [str(c) for c in rows.column("customer_id").to_pylist()]
    try:
        result, _ = evaluate_uplift(x, treated, y, ids, seed=seed)
    except UpliftDataError as exc:
        return None, str(exc)
    return result, None


def experiment_report(
    workspace: Workspace,
    score_rows: pa.Table,
    *,
    run_id: str | None = None,
    with_uplift: bool = True,
) -> dict[str, Any]:
    """The report's numbers (the JSON) for one scoring run's rows."""
    spec = workspace.spec
    with open_event_log(workspace).connection(read_only=True) as con:
        end = data_end(con, spec)
        covered = [a for a in sorted(set(score_rows.column("action").to_pylist()))
                   if spec.experiments.holdout_for(a) is not None]  # fmt: skip
        actions: dict[str, Any] = {}
        for name in covered:
            holdout = spec.experiments.holdout_for(name)
            assert holdout is not None
            scored = score_rows.filter(pc.equal(score_rows.column("action"), name))
            scored = scored.filter(pc.is_valid(scored.column("holdout_group")))
            matured = outcomes(con, spec, scored, end=end)
            groups = matured.column("holdout_group").to_pylist()
            y = matured.column("outcome").to_numpy()
            lifts = lift_by_segment(groups, y, matured.column("segment").to_pylist())
            entry: dict[str, Any] = {
                "experiment": holdout.name,
                "control_share": holdout.control_share,
                "scored_rows": scored.num_rows,
                "matured_rows": matured.num_rows,
                "lift": {k: v.to_json() for k, v in lifts.items()},
            }
            if with_uplift and matured.num_rows:
                result, why = _uplift_for(workspace, con, matured, spec.training.seed)
                entry["uplift"] = result.to_json() if result else {"skipped": why}
            elif with_uplift:
                entry["uplift"] = {"skipped": "no matured outcomes yet"}
            actions[name] = entry
    return {
        "_meta": {
            "project": spec.project,
            "scoring_run": run_id,
            "data_end": end.isoformat() if end else None,
            "lift_method": LIFT_METHOD,
            "not_covered": sorted(set(score_rows.column("action").to_pylist()) - set(covered)),
        },
        "actions": actions,
    }


# ------------------------------------------------------------------------------------------------ HTML
def lift_svg(lifts: dict[str, Any]) -> str:
    """Absolute lift per segment with its 95% interval (horizontal bars around a zero line)."""
    items = [(k, v) for k, v in lifts.items() if v["absolute"] is not None]
    height = 30 + 18 * max(1, len(items))
    bound = max([1e-6] + [max(abs(v["absolute_ci"][0]), abs(v["absolute_ci"][1])) for _, v in items]) * 1.1
    x0, x1 = 150.0, float(W + 100)

    def sx(v: float) -> float:
        return x0 + (v + bound) / (2 * bound) * (x1 - x0)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W + 140}" height="{height}" role="img">',
             "<title>Absolute lift with 95% interval</title>",
             f'<line x1="{sx(0):.1f}" y1="4" x2="{sx(0):.1f}" y2="{height - 16}" stroke="#999" stroke-dasharray="4 3"/>',
             f'<text x="{x0}" y="{height - 4}" font-size="9">{-bound:+.3f}</text>',
             f'<text x="{x1}" y="{height - 4}" font-size="9" text-anchor="end">{bound:+.3f}</text>']  # fmt: skip
    for i, (name, v) in enumerate(items):
        y = 12 + 18 * i
        lo, hi = v["absolute_ci"]
        color = COLORS["model"] if lo > 0 or hi < 0 else COLORS["ideal"]
        parts.append(
            f'<text x="{x0 - 6}" y="{y + 4}" text-anchor="end" font-size="10">{html.escape(name)}</text>'
        )
        parts.append(
            f'<line x1="{sx(lo):.1f}" y1="{y}" x2="{sx(hi):.1f}" y2="{y}" stroke="{color}" stroke-width="2"/>'
        )
        parts.append(f'<circle cx="{sx(v["absolute"]):.1f}" cy="{y}" r="3.5" fill="{color}"/>')
    parts.append("</svg>")
    return "".join(parts)


def qini_svg(uplift: dict[str, Any]) -> str:
    """The Qini curve against random targeting."""
    pts = [(float(a), float(b)) for a, b in uplift["curve"]]
    top = max([abs(b) for _, b in pts] + [1e-9]) * 1.1
    # The chart's y axis runs from 0 up; a curve dipping below 0 is shifted so that it stays visible.
    low = min([0.0] + [b for _, b in pts])
    span = top - low
    parts = axes(
        "Qini curve", "share of customers targeted (by predicted uplift)", "incremental outcomes / rows", span
    )
    end = pts[-1][1]
    parts.append(line([(0, -low), (1, end - low)], COLORS["ideal"], span, 'stroke-dasharray="4 3"'))
    parts.append(line([(a, b - low) for a, b in pts], COLORS["model"], span))
    parts.append(legend([("two-model uplift", COLORS["model"]), ("random", COLORS["ideal"])]))
    parts.append("</svg>")
    return "".join(parts)


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}%"


def _ci(ci: list[float] | None) -> str:
    return "—" if ci is None else f"[{100 * ci[0]:+.2f}%, {100 * ci[1]:+.2f}%]"


def render_html(report: dict[str, Any]) -> str:
    meta = report["_meta"]
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Experiments — {html.escape(str(meta['project']))}</title><style>{CSS}</style></head><body>",
        f"<h1>Experiments: {html.escape(str(meta['project']))}</h1>",
        f"<p class='note'>Scoring run {html.escape(str(meta['scoring_run']))}; outcomes from events up to "
        f"{html.escape(str(meta['data_end']))}. Only rows whose horizon has closed are counted. "
        f"{html.escape(LIFT_METHOD)}.</p>",
    ]
    if not report["actions"]:
        out.append("<p class='warn'>No scored action is covered by a holdout (experiments.holdouts).</p>")
    for name, e in report["actions"].items():
        out.append(f"<h2>{html.escape(name)} — experiment {html.escape(e['experiment'])} "
                   f"(control share {e['control_share']:g})</h2>")  # fmt: skip
        out.append(
            f"<p class='note'>{e['scored_rows']:,} scored rows, {e['matured_rows']:,} with matured outcomes.</p>"
        )
        rows = []
        for seg, v in e["lift"].items():
            rows.append([seg, v["n_treated"], v["n_control"], _pct(v["rate_treated"]), _pct(v["rate_control"]),
                         _pct(v["absolute"]), _ci(v["absolute_ci"]), _pct(v["relative"]), _ci(v["relative_ci"])])  # fmt: skip
        out.append(table(["segment", "treated", "control", "treated rate", "control rate", "lift (abs.)",
                           "95% CI", "lift (rel.)", "95% CI"], rows))  # fmt: skip
        out.append("<div class='charts'>" + lift_svg(e["lift"]) + "</div>")
        up = e.get("uplift")
        if up is None:
            continue
        if "skipped" in up:
            out.append(f"<p class='note'>Uplift model not fitted: {html.escape(str(up['skipped']))}.</p>")
            continue
        verdict = up.get("verdict") or (
            "better than random targeting" if up["beats_random"] else "no better than random targeting"
        )
        norm = (f"normalised Qini coefficient {up['qini_coefficient']:.4f}, AUUC {up['uplift_auc']:.4f} "
                "(as scikit-uplift); " if up.get("qini_coefficient") is not None else "")  # fmt: skip
        out.append(f"<h3>Uplift ({html.escape(up['method'])})</h3><p>{norm}Qini area {up['qini']:.5f} "
                   f"(AUUC {up['auuc']:.5f} vs random {up['random_auuc']:.5f}): {html.escape(verdict)}.</p>")  # fmt: skip
        out.append("<div class='charts'>" + qini_svg(up) + "</div>")
        out.append(table(["quintile (by predicted uplift)", "rows", "predicted uplift", "realised uplift"],
                          [[q["quintile"], q["rows"], _pct(q["predicted_uplift"]), _pct(q["realised_uplift"])]
                           for q in up["by_quintile"]]))  # fmt: skip
    out.append("</body></html>")
    return "\n".join(out)


def write_report(workspace: Workspace, report: dict[str, Any], out: Path | None = None) -> dict[str, Path]:
    """Write HTML and JSON (to ``out``'s stem, or under ``.propensity/reports/``); return their paths."""
    run = str(report["_meta"].get("scoring_run") or "rows")
    if out is None:
        folder = workspace.state_dir / "reports"
        paths = {"html": folder / f"experiments-{run}.html", "json": folder / f"experiments-{run}.json"}
        latest = {"latest_html": folder / "experiments.html", "latest_json": folder / "experiments.json"}
    else:
        stem = out.with_suffix("")
        paths = {"html": stem.with_suffix(".html"), "json": stem.with_suffix(".json")}
        latest = {}
    page, data = render_html(report), json.dumps(report, indent=2) + "\n"
    for key, path in {**paths, **latest}.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page if key.endswith("html") else data, encoding="utf-8")
    return {**paths, **latest}


def headline(lift: Lift) -> str:
    """One line: ``+1.23% [+0.40%, +2.05%]`` (absolute lift with its interval)."""
    if lift.absolute is None or lift.absolute_ci is None:
        return "—"
    return (
        f"{100 * lift.absolute:+.2f}% [{100 * lift.absolute_ci[0]:+.2f}%, {100 * lift.absolute_ci[1]:+.2f}%]"
    )


_lift_cache: dict[tuple[str, ...], dict[str, Any]] = {}


def experiments_view(workspace: Workspace) -> dict[str, Any]:
    """The console's experiments page: lift per experiment with 95% intervals on the newest complete scoring run
    that has matured outcomes (computed now, without uplift), and the uplift curves of the latest stored report
    (``propensity experiments report``), which fits the uplift models and is too slow for a page load."""
    from propensity.scoring.reading import memo, run_rows, store_runs
    from propensity.scoring.score_store import open_score_store

    stored = None
    path = workspace.state_dir / "reports" / "experiments.json"
    if path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            stored = None
    live = None
    if workspace.spec.experiments.holdouts:
        store = open_score_store(workspace)

        def read() -> tuple[Any, int]:
            with open_event_log(workspace).connection(read_only=True) as con:
                return data_end(con, workspace.spec), con.execute("SELECT count(*) FROM events").fetchall()[
                    0
                ][0]

        end, events = memo(workspace, "experiments-events", read)
        longest = max((a.gap.timedelta + a.horizon.timedelta + a.label_delay.timedelta for a in workspace.spec.actions),
                      default=None)  # fmt: skip
        complete = [r for r in store_runs(workspace, store) if r.status == "complete"]
        # The newest run whose every action has matured, else the newest (some actions may have matured).
        run = next((r for r in complete if end is not None and longest is not None and r.as_of + longest <= end),
                   complete[0] if complete else None)  # fmt: skip
        if run is not None:
            # A run's lift changes only when events arrive (late ones too) or the experiments change.
            key = (
                str(workspace.root),
                run.run_id,
                str(end),
                str(events),
                workspace.spec.experiments.model_dump_json(),
            )
            live = _lift_cache.get(key)
            if live is None:
                # Score rows carry their as_of (contract 2.0; older rows get it from the run's record).
                rows = run_rows(store, run.run_id)
                live = experiment_report(workspace, rows, run_id=run.run_id, with_uplift=False)
                _lift_cache.clear()
                _lift_cache[key] = live
    uplift = {}
    if stored is not None:
        for name, entry in (stored.get("actions") or {}).items():
            uplift[name] = entry.get("uplift")
    return {
        "holdouts": [h.model_dump() for h in workspace.spec.experiments.holdouts],
        "lift": live,
        "uplift": uplift,
        "uplift_run": None if stored is None else (stored.get("_meta") or {}).get("scoring_run"),
        "method": LIFT_METHOD,
    }
