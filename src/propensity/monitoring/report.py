"""The monitoring report: one self-contained HTML page (inline SVG, no scripts, no network) and the numbers as JSON.

Made from the stored monitor runs: the latest run's results (firing ones first), feature drift (PSI) per feature
over the runs, each action's score histogram in the reference vs now, calibration and AUC per matured period with
the CBPE estimates beside the measured figures, and freshness per source over the runs.

JSON layout: ``latest`` (the latest run, as :meth:`MonitorRun.to_json`) and ``history`` (per run: ``run_id``,
``as_of``, ``status`` and ``values``, a list of ``{name, subject, value, status}``).
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from propensity.core.html import CSS, H, W, line, table, xy
from propensity.monitoring.monitors import MonitorResult, finite_or_none
from propensity.monitoring.store import MonitorRun, dumps

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]  # fmt: skip
STATUS_COLOR = {"ok": "#2ca02c", "warning": "#d98c00", "alert": "#d62728"}
MAX_LINES = 10
LEGEND_W = 240  # wide enough for a 36-character feature name at 10 px


def _legend(items: list[tuple[str, str]]) -> str:
    """Legend to the right of the plot (the frame is ``LEGEND_W`` wider than the training report's charts)."""
    return "".join(
        f'<rect x="{W + 2}" y="{20 + 14 * i}" width="10" height="3" fill="{c}"/>'
        f'<text x="{W + 16}" y="{24 + 14 * i}" font-size="10">{html.escape(t if len(t) <= 36 else t[:35] + "…")}</text>'
        for i, (t, c) in enumerate(items)
    )


def _latest(runs: list[MonitorRun], latest: MonitorRun | None) -> MonitorRun | None:
    """The run shown in full: the one given, else the newest by ``as_of`` (runs are plotted in as_of order)."""
    return latest if latest is not None else (runs[-1] if runs else None)


def report_json(runs: list[MonitorRun], latest: MonitorRun | None = None) -> dict[str, Any]:
    """The report's numbers: the latest run in full and every run's values."""
    history = [
        {
            "run_id": r.run_id,
            "as_of": r.as_of.isoformat(),
            "status": r.status,
            "values": [
                {"name": x.name, "subject": x.subject, "value": finite_or_none(x.value), "status": x.status}
                for x in r.results
            ],
        }
        for r in runs
    ]
    shown = _latest(runs, latest)
    return {"latest": shown.to_json() if shown else None, "history": history}


# ------------------------------------------------------------------------------------------------ charts
def _frame(title: str, xlabel: str, ylabel: str, ymax: float, xticks: list[str]) -> list[str]:
    """Axes with free x tick labels (first, middle, last) and a y scale from 0 to ``ymax``."""
    x0, y0 = xy(0, 0, ymax)
    x1, y1 = xy(1, ymax, ymax)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W + LEGEND_W}" height="{H}" '
        f'viewBox="0 0 {W + LEGEND_W} {H}" role="img">',
        f"<title>{html.escape(title)}</title>",
        f'<text x="{W / 2}" y="10" text-anchor="middle" font-size="11" font-weight="bold">{html.escape(title)}</text>',
        f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="#fafafa" stroke="#ccc"/>',
        f'<text x="{W / 2}" y="{H - 4}" text-anchor="middle" font-size="10">{html.escape(xlabel)}</text>',
        f'<text x="10" y="{H / 2}" transform="rotate(-90 10 {H / 2})" text-anchor="middle" font-size="10">'
        f"{html.escape(ylabel)}</text>",
    ]
    for t in (0.0, 0.5, 1.0):
        _, y = xy(0, t * ymax, ymax)
        parts.append(f'<text x="{x0 - 3}" y="{y + 3}" text-anchor="end" font-size="9">{t * ymax:.3g}</text>')
    for i, label in enumerate(xticks):
        pos = i / (len(xticks) - 1) if len(xticks) > 1 else 0.5
        x, _ = xy(pos, 0, ymax)
        parts.append(
            f'<text x="{x}" y="{y0 + 12}" text-anchor="middle" font-size="8">{html.escape(label)}</text>'
        )
    return parts


def _short(t: str) -> str:
    return t[:16].replace("T", " ")


def series_svg(
    title: str,
    ylabel: str,
    times: list[str],
    series: dict[str, list[float | None]],
    *,
    lines: dict[str, float],
) -> str:
    """Values over time, one line per series (gaps where a value is missing); dashed lines mark thresholds."""
    values = [v for s in series.values() for v in s if v is not None]
    ymax = max([*values, *lines.values(), 1e-9]) * 1.1
    ticks = [_short(times[0]), _short(times[len(times) // 2]), _short(times[-1])] if len(times) > 2 else [
        _short(t) for t in times]  # fmt: skip
    parts = _frame(title, "time", ylabel, ymax, ticks)
    n = len(times)
    for label, level in lines.items():
        parts.append(
            line([(0, level), (1, level)], STATUS_COLOR.get(label, "#999"), ymax, 'stroke-dasharray="4 3"')
        )
    legend = []
    for i, (name, vals) in enumerate(list(series.items())[:MAX_LINES]):
        color = PALETTE[i % len(PALETTE)]
        pts = [(j / (n - 1) if n > 1 else 0.5, v) for j, v in enumerate(vals) if v is not None]
        if pts:
            parts.append(line(pts, color, ymax, dots=True))
        legend.append((name, color))
    parts.append(_legend(legend))
    parts.append("</svg>")
    return "".join(parts)


def histogram_pair_svg(title: str, edges: list[float], reference: list[float], now: list[float]) -> str:
    """Two histograms on one axis: the reference (grey) and now (blue), as shares of rows."""
    ymax = max([*reference, *now, 1e-9]) * 1.1
    parts = _frame(title, "calibrated score", "share of rows", ymax, [f"{edges[0]:g}", f"{edges[-1]:g}"])
    lo, hi = edges[0], edges[-1]
    span = (hi - lo) or 1.0
    for shares, color, half in ((reference, "#bbbbbb", 0), (now, "#1f77b4", 1)):
        for share, a, b in zip(shares, edges[:-1], edges[1:], strict=True):
            w = (b - a) / span / 2  # each bin: the reference in its left half, now in its right half
            x0, y0 = xy((a - lo) / span + half * w, 0, ymax)
            x1, y1 = xy((a - lo) / span + (half + 1) * w, share, ymax)
            parts.append(f'<rect x="{x0:.1f}" y="{y1:.1f}" width="{max(0.5, x1 - x0 - 0.5):.1f}" '
                         f'height="{y0 - y1:.1f}" fill="{color}"/>')  # fmt: skip
    parts.append(_legend([("reference (test split)", "#bbbbbb"), ("now", "#1f77b4")]))
    parts.append("</svg>")
    return "".join(parts)


def reliability_pair_svg(title: str, first: dict[str, Any], last: dict[str, Any]) -> str:
    """Mean predicted vs realised rate per score bin, for the oldest and the latest matured period."""
    curves = {f"{first['as_of'][:10]}": first["reliability"], f"{last['as_of'][:10]}": last["reliability"]}
    top = max([1e-9] + [max(r["mean_predicted"], r["realised_rate"]) for c in curves.values() for r in c])
    s = min(1.0, max(0.1, top * 1.1))
    parts = _frame(title, f"mean predicted (0 to {s:.2g})", "realised rate", s, ["0", f"{s:.2g}"])
    parts.append(line([(0, 0), (1, s)], "#999999", s, 'stroke-dasharray="4 3"'))
    legend = []
    for i, (label, curve) in enumerate(curves.items()):
        color = PALETTE[i]
        parts.append(
            line([(r["mean_predicted"] / s, r["realised_rate"]) for r in curve], color, s, dots=True)
        )
        legend.append((label, color))
    parts.append(_legend([*legend, ("perfect", "#999999")]))
    parts.append("</svg>")
    return "".join(parts)


# ------------------------------------------------------------------------------------------------ HTML
def _history(runs: list[MonitorRun], name: str) -> tuple[list[str], dict[str, list[float | None]]]:
    times = [r.as_of.isoformat() for r in runs]
    subjects = sorted({x.subject for r in runs for x in r.results if x.name == name})
    series: dict[str, list[float | None]] = {s: [] for s in subjects}
    for r in runs:
        values = {x.subject: finite_or_none(x.value) for x in r.results if x.name == name}
        for s in subjects:
            series[s].append(values.get(s))
    return times, series


def _status_cell(status: str) -> str:
    return f"<b style='color:{STATUS_COLOR[status]}'>{status}</b>"


def _results_table(results: list[MonitorResult]) -> str:
    head = "".join(
        f"<th>{h}</th>" for h in ("monitor", "subject", "value", "warning above", "alert above", "status")
    )
    body = []
    for r in sorted(
        results, key=lambda x: (-{"ok": 0, "warning": 1, "alert": 2}[x.status], x.name, x.subject)
    ):
        v = finite_or_none(r.value)
        value = "n/a" if v is None else f"{v:.4g}"
        body.append(f"<tr><td>{html.escape(r.name)}</td><td>{html.escape(r.subject)}</td><td>{value}</td>"
                    f"<td>{r.warning:g}</td><td>{r.alert:g}</td><td>{_status_cell(r.status)}</td></tr>")  # fmt: skip
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _top_subjects(run: MonitorRun, name: str, n: int = MAX_LINES) -> list[str]:
    ranked = sorted(
        (x for x in run.results if x.name == name), key=lambda x: -(finite_or_none(x.value) or 0.0)
    )
    return [x.subject for x in ranked[:n]]


def render_html(runs: list[MonitorRun], *, project: str = "", latest: MonitorRun | None = None) -> str:
    """The page for ``runs`` (oldest first; the last one is shown in full)."""
    title = f"Monitoring report — {project}" if project else "Monitoring report"
    out = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
           f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]  # fmt: skip
    if not runs:
        out.append("<p>No monitor runs yet: run <code>propensity monitor</code>.</p></body></html>")
        return "\n".join(out)
    latest = _latest(runs, latest) or runs[-1]
    counts = {s: sum(1 for r in latest.results if r.status == s) for s in ("alert", "warning", "ok")}
    out.append(f"<p class='note'>latest run <b>{latest.run_id}</b> as of {latest.as_of.isoformat()} · bundle "
               f"{html.escape(str(latest.bundle_id))} · {len(runs)} run(s) from {runs[0].as_of.isoformat()} · "
               f"{counts['alert']} alert(s), {counts['warning']} warning(s), {counts['ok']} ok</p>")  # fmt: skip
    for note in latest.notes:
        out.append(f"<p class='warn'>{html.escape(note)}</p>")
    firing = [r for r in latest.results if r.status != "ok"]
    quiet = [r for r in latest.results if r.status == "ok"]
    out.append("<h2>Latest results</h2>")
    out.append(_results_table(firing) if firing else "<p>Every monitor is ok.</p>")
    out.append(f"<details><summary>{len(quiet)} monitor(s) ok</summary>{_results_table(quiet)}</details>")

    out.append("<h2>Feature drift over time</h2><div class='charts'>")
    for name, label in (
        ("feature_psi", "PSI"),
        ("feature_ks", "KS statistic"),
        ("null_rate", "null share increase"),
    ):
        times, series = _history(runs, name)
        keep = _top_subjects(latest, name)
        if keep:
            t = latest.result(name, keep[0])
            lines = {"warning": t.warning, "alert": t.alert} if t else {}
            out.append(series_svg(f"{label} (top {len(keep)} now)", label, times, {k: series[k] for k in keep},
                                  lines=lines))  # fmt: skip
    out.append("</div>")

    scores = [r for r in latest.results if r.name == "score_psi"]
    if scores:
        out.append("<h2>Scores: reference vs now</h2><div class='charts'>")
        for r in scores:
            d = r.details
            out.append(histogram_pair_svg(f"{r.subject} (PSI {r.value:.3f})", d["histogram_edges"],
                                          d["histogram_reference"], d["histogram_now"]))  # fmt: skip
        out.append("</div>")

    calib = [r for r in latest.results if r.name == "calibration_ece"]
    expected = {r.subject: r for r in latest.results if r.name == "expected_auc_drop"}
    if calib or expected:
        out.append(
            "<h2>Calibration and performance on matured labels, with estimates before labels (CBPE)</h2>"
        )
        out.append("<p class='note'>Each point is one grid cutoff whose label window has closed. 'expected' is the "
                   "CBPE estimate from the calibrated scores alone; it is available for the latest cutoff "
                   "before any label matures (the last row of each table).</p>")  # fmt: skip
    for r in calib:
        periods = r.details.get("periods", [])
        times = [p["as_of"] for p in periods]
        out.append(f"<h3>{html.escape(r.subject)}</h3><div class='charts'>")
        out.append(series_svg("ECE per period", "ECE", times, {"ECE": [p["ece"] for p in periods]},
                              lines={"warning": r.warning, "alert": r.alert}))  # fmt: skip
        out.append(series_svg("ROC-AUC: measured vs expected", "ROC-AUC", times,
                              {"measured": [p["roc_auc"] for p in periods],
                               "expected (CBPE)": [p["expected"]["expected_auc"] for p in periods]}, lines={}))  # fmt: skip
        out.append(series_svg("Precision at threshold: measured vs expected", "precision", times,
                              {"measured": [p["measured"]["precision"] for p in periods],
                               "expected (CBPE)": [p["expected"]["expected_precision"] for p in periods]},
                              lines={}))  # fmt: skip
        if periods:
            out.append(reliability_pair_svg("Reliability: oldest vs latest period", periods[0], periods[-1]))
        out.append("</div>")
        rows = [[p["as_of"][:10], p["n"], p["positives"], p["ece"], p["roc_auc"] or "—",
                 p["expected"]["expected_auc"] or "—", p["measured"]["precision"] or "—",
                 p["expected"]["expected_precision"] or "—", p["measured"]["rate"] or "—",
                 p["expected"]["expected_rate"] or "—"] for p in periods]  # fmt: skip
        e = expected.get(r.subject)
        if e is not None:
            d = e.details
            rows.append(["now (no labels yet)", d["n"], "—", "—", "—", d["expected_auc"] or "—", "—",
                         d["expected_precision"] or "—", "—", d["expected_rate"] or "—"])  # fmt: skip
        out.append(table(["cutoff", "rows", "positives", "ECE", "AUC", "expected AUC", "precision",
                           "expected precision", "realised rate", "expected rate"], rows))  # fmt: skip

    out.append("<h2>Freshness and volume over time</h2><div class='charts'>")
    for name, label in (("freshness_silence", "hours since last event"), ("freshness_lag", "p95 lag (hours)"),
                        ("volume", "volume fold change")):  # fmt: skip
        times, series = _history(runs, name)
        if series:
            t = next((x for x in latest.results if x.name == name), None)
            lines = {"warning": t.warning, "alert": t.alert} if t else {}
            out.append(series_svg(label, label, times, series, lines=lines))
    out.append("</div></body></html>")
    return "\n".join(out)


def write_report(
    folder: Path, runs: list[MonitorRun], *, project: str = "", latest: MonitorRun | None = None
) -> dict[str, Path]:
    """Write ``monitoring-<as_of>.html`` and ``.json`` (and ``monitoring.html``/``.json``, the latest) to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    shown = _latest(runs, latest)
    stamp = shown.as_of.strftime("%Y%m%dT%H%M%SZ") if shown else datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    page = render_html(runs, project=project, latest=shown)
    data = dumps(report_json(runs, shown))
    paths = {"html": folder / f"monitoring-{stamp}.html", "json": folder / f"monitoring-{stamp}.json",
             "latest_html": folder / "monitoring.html", "latest_json": folder / "monitoring.json"}  # fmt: skip
    for key, text in (("html", page), ("latest_html", page), ("json", data), ("latest_json", data)):
        paths[key].write_text(text if key.endswith("html") else json.dumps(json.loads(text), indent=2) + "\n",
                              encoding="utf-8")  # fmt: skip
    return paths
