"""The evaluation report: one self-contained HTML file (inline SVG, no scripts, no network) plus the same numbers
as JSON, both made from a bundle's manifest alone, so any bundle's report can be rewritten at any time.

JSON layout: one key per action name holding ``model`` and ``baseline`` (``roc_auc``, ``pr_auc``, ``log_loss``,
``brier``, ``ece``, ``lift_top_decile``: the served procedure and a plain logistic regression on the test
split), ``model_kind``, ``champion`` (why it won), ``candidates`` (each candidate's calibrated log loss on the
calibration split), ``backtest`` (the refit procedure at rolling origins), ``stages`` (rows and cutoffs each stage
used: search, champion, evaluation, served), ``warnings``, ``quality_lift`` (top-decile rate ÷ base rate of the
model), ``realised_rate_by_decile``, ``counts`` and, for synthetic data, ``oracle_roc_auc`` and ``oracle_ece``
with the model's and baseline's figures on the same rows (``on_oracle_rows``); plus ``_meta`` (bundle, versions).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from propensity.core.html import COLORS, CSS, TOP, axes, legend, line, table, xy
from propensity.core.manifest import BundleManifest
from propensity.training.metrics import HEADLINE, headline


def report_json(manifest: BundleManifest) -> dict[str, Any]:
    out: dict[str, Any] = {
        "_meta": {
            "bundle": manifest.id,
            "created_at": manifest.created_at,
            "project": manifest.project,
            "feature_set_version": manifest.feature_set_version,
            "training_set": manifest.training_set,
            "code_version": manifest.code_version,
            "data": manifest.data,
        }
    }
    for name, info in sorted(manifest.actions.items()):
        m = info.metrics
        entry: dict[str, Any] = {
            "model": headline(m["model"]),
            "baseline": headline(m["baseline"]),
            "quality_lift": m["model"]["lift_top_decile"],
            "base_rate": m["model"]["base_rate"],
            "test_rows": m["model"]["n"],
            "realised_rate_by_decile": [
                {"decile": d["decile"], "mean_score": d["mean_score"], "realised_rate": d["realised_rate"]}
                for d in m["model"]["deciles"]
            ],
            "counts": info.counts,
            "calibration": {k: v["method"] for k, v in info.calibration.items()},
            "trees": m["model"].get("trees"),
            "training_window": info.training_window,
            "model_kind": (info.model or {}).get("kind", "lightgbm"),
            "champion": info.champion,
            "candidates": [
                {
                    k: c.get(k)
                    for k in ("candidate", "kind", "calibration", "calibration_log_loss", "champion")
                }
                | {"calibration_split": c.get("calibration_split")}
                for c in info.candidates or []
            ],
            "backtest": info.backtest,
            "stages": info.stages,
            "warnings": info.warnings or [],
        }
        if (info.definition or {}).get("kind") == "table":
            entry["rows"] = getattr(info, "rows", None)
            entry["ece_ci"] = m["model"].get("ece_ci")
            entry["notes"] = getattr(info, "notes", None) or []
        oracle = info.oracle
        if oracle:
            entry["oracle_roc_auc"] = oracle["oracle"]["roc_auc"]
            entry["oracle_ece"] = oracle["oracle"]["ece"]
            entry["on_oracle_rows"] = oracle
        out[name] = entry
    return out


# ------------------------------------------------------------------------------------------------ SVG charts
def reliability_svg(metrics: dict[str, Any]) -> str:
    """Mean predicted vs realised rate per bin, both axes on the same scale (the diagonal is perfect)."""
    top = max(
        [1e-9]
        + [
            max(r["mean_predicted"], r["realised_rate"])
            for k in ("model", "baseline")
            for r in metrics[k]["reliability"]
        ]
    )
    s = min(1.0, max(0.1, top * 1.1))
    parts = axes("Reliability", f"mean predicted probability (0 to {s:.2g})", "realised rate", s)
    parts.append(line([(0, 0), (1, s)], COLORS["ideal"], s, 'stroke-dasharray="4 3"'))
    for k in ("baseline", "model"):
        pts = [(r["mean_predicted"] / s, r["realised_rate"]) for r in metrics[k]["reliability"]]
        parts.append(line(pts, COLORS[k], s, dots=True))
    parts.append(
        legend(
            [("model", COLORS["model"]), ("baseline", COLORS["baseline"]), ("perfect", COLORS["ideal"])],
            right=True,
        )
    )
    parts.append("</svg>")
    return "".join(parts)


def gains_svg(metrics: dict[str, Any]) -> str:
    parts = axes("Cumulative gains", "share of customers (by score)", "share of positives")
    parts.append(line([(0, 0), (1, 1)], COLORS["ideal"], 1.0, 'stroke-dasharray="4 3"'))
    for k in ("baseline", "model"):
        pts = [(0.0, 0.0)] + [(d["cumulative_share"], d["cumulative_gain"]) for d in metrics[k]["deciles"]]
        parts.append(line(pts, COLORS[k], dots=True))
    parts.append(
        legend(
            [("model", COLORS["model"]), ("baseline", COLORS["baseline"]), ("random", COLORS["ideal"])],
            right=True,
        )
    )
    parts.append("</svg>")
    return "".join(parts)


def histogram_svg(metrics: dict[str, Any]) -> str:
    hist = metrics["model"]["histogram"]
    counts, edges = hist["counts"], hist["edges"]
    total = sum(counts) or 1.0
    shares = [c / total for c in counts]
    ymax = max([*shares, 1e-09]) * 1.1
    parts = axes("Score histogram (model)", "calibrated score", "share of rows", ymax)
    for s, lo, hi in zip(shares, edges[:-1], edges[1:], strict=True):
        x0, y0 = xy(lo, 0, ymax)
        x1, y1 = xy(hi, s, ymax)
        parts.append(
            f'<rect x="{x0:.1f}" y="{y1:.1f}" width="{max(0.5, x1 - x0 - 1):.1f}" height="{y0 - y1:.1f}" fill="{COLORS["model"]}"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def importance_svg(importance: list[dict[str, Any]], top: int = 15) -> str:
    """Horizontal bars, one per feature; the label column is as wide as the longest name (none is clipped)."""
    rows = importance[:top]
    vmax = max([r["mean_abs_shap"] for r in rows] + [1e-12])
    label_w = 12 + 6.2 * max([len(r["feature"]) for r in rows] + [8])  # ~6.2 px per character at 10 px
    bar_w, value_w = 240.0, 48.0
    width = int(label_w + bar_w + value_w)
    height = TOP + 10 + 16 * len(rows)
    title = f"Feature importance: mean |SHAP| (log-odds), top {len(rows)}"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img">', f"<title>{html.escape(title)}</title>",
             f'<text x="{width / 2}" y="15" text-anchor="middle" font-size="12" font-weight="bold">'
             f"{html.escape(title)}</text>"]  # fmt: skip
    for i, r in enumerate(rows):
        y = TOP + 4 + 16 * i
        w = bar_w * r["mean_abs_shap"] / vmax
        parts.append(
            f'<text x="{label_w - 5:.1f}" y="{y + 10}" text-anchor="end" font-size="10">{html.escape(r["feature"])}</text>'
        )
        parts.append(
            f'<rect x="{label_w:.1f}" y="{y}" width="{w:.1f}" height="12" fill="{COLORS["model"]}"/>'
        )
        parts.append(
            f'<text x="{label_w + w + 4:.1f}" y="{y + 10}" font-size="9">{r["mean_abs_shap"]:.3f}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _calibration_text(calibration: dict[str, str]) -> str:
    """``{"model": "isotonic", "baseline": "platt"}`` → ``model isotonic, baseline platt``."""
    names = {"model": "model", "baseline": "baseline"}
    return ", ".join(f"{names.get(k, k)} {v}" for k, v in calibration.items())


# ------------------------------------------------------------------------------------------------ HTML
def render_html(manifest: BundleManifest, skipped: dict[str, str] | None = None) -> str:
    data = report_json(manifest)
    meta = data["_meta"]
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>propensity report — {html.escape(str(meta['project']))}</title><style>{CSS}</style></head><body>",
        f"<h1>Evaluation report — {html.escape(str(meta['project']))}</h1>",
        f"<p class='note'>bundle <b>{meta['bundle']}</b> · created {meta['created_at']} · features "
        f"{meta['feature_set_version']} · training set {meta['training_set']} · code {meta['code_version']}. "
        "Evaluate, then refit: each action's champion (the candidate with the lowest calibrated log loss on the "
        "calibration split) is served refitted on every matured row and calibrated on the newest matured window. "
        "Test figures score that same procedure run as of the test split's first cutoff (fitted on every row "
        "whose label had matured by then, calibrated on the calibration split), on the latest cutoffs; the "
        "baseline is a plain logistic regression on the same rows. The backtest repeats the procedure at earlier "
        "origins.</p>",
    ]
    summary = []
    for name in sorted(k for k in data if k != "_meta"):
        e = data[name]
        summary.append([name, e["model_kind"], e["test_rows"], e["base_rate"], e["model"]["roc_auc"],
                        e["baseline"]["roc_auc"], e["model"]["ece"], e["baseline"]["ece"], e["model"]["log_loss"],
                        e["baseline"]["log_loss"], e["quality_lift"],
                        e.get("oracle_roc_auc", "—"), e.get("oracle_ece", "—")])  # fmt: skip
    out.append("<h2>Summary</h2>")
    out.append(table(["action", "served model", "test rows", "base rate", "AUC (model)", "AUC (baseline)",
                       "ECE (model)", "ECE (baseline)", "log loss (model)", "log loss (baseline)",
                       "quality: lift over random", "oracle AUC", "oracle ECE"], summary))  # fmt: skip
    for name in sorted(k for k in data if k != "_meta"):
        for w in data[name]["warnings"]:
            out.append(f"<p class='warn'>{html.escape(w)}</p>")
    for name, reason in sorted((skipped or {}).items()):
        out.append(f"<p class='warn'>{html.escape(name)} was not trained: {html.escape(reason)}</p>")
    for name, info in sorted(manifest.actions.items()):
        m = info.metrics
        e = data[name]
        out.append(f"<h2>{html.escape(name)}</h2>")
        d = info.definition or {}
        w = info.training_window
        if d.get("kind") == "table":  # a labelled table (propensity train --table)
            rows_info = getattr(info, "rows", None) or {}
            out.append(f"<p class='note'>labelled table {html.escape(str(d.get('source') or d['name']))}, label "
                       f"{html.escape(str(d['label']))}; split: {html.escape(str(w.get('split')))}: the figures are "
                       f"on predictions for rows no model saw in training; calibration: {html.escape(_calibration_text(e['calibration']))}. "
                       f"{rows_info.get('input_rows', '?')} input rows, {rows_info.get('rows_used', '?')} used"
                       + "".join(f"; {html.escape(k)}: {v}" for k, v in (rows_info.get('rejected') or {}).items())
                       + "</p>")  # fmt: skip
            for note in getattr(info, "notes", None) or []:
                out.append(f"<p class='note'>{html.escape(str(note))}</p>")
            ci = m.get("model", {}).get("ece_ci")
            if ci:
                out.append(
                    f"<p class='note'>ECE (LightGBM, pooled) 95% bootstrap interval: [{ci[0]:.4f}, {ci[1]:.4f}]</p>"
                )
        else:
            out.append(f"<p class='note'>horizon {d['horizon']}, outcome {d['outcome']}, target {', '.join(d['target']['event_type'])}; "
                       f"training window {w['first_cutoff']} → {w['last_cutoff']} "
                       f"(calibration from {w['calibration_start']}, test from "
                       f"{w['test_start']}); calibration: {html.escape(_calibration_text(e['calibration']))}</p>")  # fmt: skip
        rows = [[k.replace("_", " "), e["model"][k], e["baseline"][k]] for k in HEADLINE]
        if "on_oracle_rows" in e:
            o = e["on_oracle_rows"]
            rows = [
                [
                    k.replace("_", " "),
                    e["model"][k],
                    e["baseline"][k],
                    o["model"][k],
                    o["baseline"][k],
                    o["oracle"][k],
                ]
                for k in HEADLINE
            ]
            out.append(
                table(
                    [
                        "metric",
                        "model",
                        "baseline",
                        f"model (oracle rows, n={o['rows']})",
                        "baseline (oracle rows)",
                        "oracle",
                    ],
                    rows,
                )
            )
        else:
            out.append(table(["metric", "model", "baseline"], rows))
        out.append(_candidates_html(e))
        out.append(_stages_html(e))
        out.append(_backtest_html(e))
        out.append("<div class='charts'>" + reliability_svg(m) + gains_svg(m) + histogram_svg(m) + "</div>")
        out.append("<h3>Realised rate by score decile (model, test split)</h3>")
        out.append(table(["decile", "rows", "mean score", "realised rate", "lift", "cumulative gain"],
                          [[r["decile"], r["n"], r["mean_score"], r["realised_rate"], r["lift"], r["cumulative_gain"]]
                           for r in m["model"]["deciles"]]))  # fmt: skip
        examples = info.reason_code_examples or []
        if examples:
            out.append("<h3>Reason codes: the three highest and three lowest test scores</h3>")
            out.append(
                table(
                    ["score", "outcome", "top reasons (feature, direction, log-odds contribution)"],
                    [
                        [
                            ex["score"],
                            ex["label"],
                            "; ".join(
                                f"{r['feature']} {r['direction']} ({r['contribution']:+.3f})"
                                for r in ex["reasons"]
                            ),
                        ]
                        for ex in examples
                    ],
                )
            )
        out.append("<h3>Feature importance (mean |SHAP| in log-odds, and split gain)</h3>")
        out.append("<div class='charts'>" + importance_svg(info.importance) + "</div>")
        out.append(
            table(
                ["feature", "mean |SHAP|", "gain"],
                [[r["feature"], r["mean_abs_shap"], r["gain"]] for r in info.importance[:15]],
            )
        )
    out.append("</body></html>")
    return "\n".join(out)


def _candidates_html(e: dict[str, Any]) -> str:
    champ = e.get("champion") or {}
    rows = [[c["candidate"] + (" ★" if c.get("champion") else ""), c.get("calibration", ""),
             c["calibration_log_loss"], (c.get("calibration_split") or {}).get("roc_auc", "—"),
             (c.get("calibration_split") or {}).get("ece", "—")] for c in e.get("candidates") or []]  # fmt: skip
    if not rows:
        return ""
    if champ.get("baseline_calibration_log_loss") is not None:
        rows.append(["plain logistic regression (reference, not a candidate)", "",
                     champ["baseline_calibration_log_loss"], "—", "—"])  # fmt: skip
    why = html.escape(str(champ.get("why", "")))
    return (
        f"<h3>Candidates (served: {html.escape(str(e['model_kind']))})</h3><p class='note'>{why}. Each candidate "
        "was fitted on the training split and calibrated on the calibration split by a two-fold cross-fit; its "
        "figures there are cross-fitted too.</p>"
        + table(["candidate", "calibration", "log loss (calibration split)", "AUC", "ECE"], rows)
    )


def _stages_html(e: dict[str, Any]) -> str:
    st = e.get("stages") or {}
    if not st:
        c = e["counts"]
        return table(["split", "rows", "positives"], [[k, v["rows"], v["positives"]] for k, v in c.items()])

    def row(label: str, s: dict[str, Any] | None) -> list[Any]:
        s = s or {}
        return [label, s.get("rows", 0), s.get("positives", 0), s.get("cutoffs", 0),
                s.get("first_as_of", "—"), s.get("last_as_of", "—")]  # fmt: skip

    champ = st["champion"]
    how = champ.get("how", "time: training → calibration split")
    rows = [
        row("training split", champ["train"]),
        row(f"champion: candidates fitted on ({how})", champ.get("fitted_on", champ["train"])),
        row("champion: compared on (calibration split)", champ["calibration"]),
        row("rows purged from the evaluation splits", st.get("purged")),
        row("test: procedure fitted on", st["evaluation"]["model"]),
        row("test: calibrated on", st["evaluation"]["calibration"]),
        row("test: scored on (test split)", st["evaluation"]["test"]),
        row("served: fitted on (every matured row)", st["served"]["model"]),
        row("served: calibrated on (newest matured window)", st["served"]["calibration"]),
    ]
    search = st.get("search") or {}
    note = (
        f"Search: {search.get('how', '?')}-ordered validation, {search.get('fit_rows', 0):,} rows fitted, "
        f"{search.get('valid_rows', 0):,} validated (a sample of whole customers when large). Calibration: "
        f"{html.escape(str(st['served'].get('calibration_method')))}, chosen by cross-fitted log loss "
        f"({st['served'].get('cross_fit')})."
    )
    return (
        "<h3>Rows each stage used</h3>"
        + table(["stage", "rows", "positives", "cutoffs", "first as_of", "last as_of"], rows)
        + f"<p class='note'>{note}</p>"
    )


def _backtest_html(e: dict[str, Any]) -> str:
    folds = (e.get("backtest") or {}).get("folds") or []
    if not folds:
        return ""
    rows = []
    for f in folds:
        if f.get("skipped"):
            rows.append([f.get("origin") or "—", f["skipped"], "", "", "", "", "", ""])
            continue
        m, b = f.get("model") or {}, f.get("baseline") or {}
        rows.append([f["origin"] + (" (test)" if f.get("test_split") else ""), f["model_rows"]["rows"],
                     f["evaluated"]["rows"], m.get("roc_auc", "—"), b.get("roc_auc", "—"), m.get("ece", "—"),
                     b.get("ece", "—"), m.get("log_loss", "—")])  # fmt: skip
    return (
        "<h3>Backtest of the refit procedure (rolling origins)</h3><p class='note'>At each origin the champion "
        "is refitted on every row whose label had matured by then, calibrated on the newest matured window, and "
        "scored on the cutoffs up to the next origin. Large sets are fitted on samples of whole customers.</p>"
        + table(
            [
                "origin",
                "rows fitted",
                "rows scored",
                "AUC (model)",
                "AUC (baseline)",
                "ECE (model)",
                "ECE (baseline)",
                "log loss (model)",
            ],
            rows,
        )
    )


def write_report_files(
    folder: Path, manifest: BundleManifest, skipped: dict[str, str] | None = None
) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"report-{manifest.id}"
    paths = {"html": folder / f"{stem}.html", "json": folder / f"{stem}.json"}
    paths["html"].write_text(render_html(manifest, skipped), encoding="utf-8")
    data = report_json(manifest)
    if skipped:
        data["_meta"]["skipped"] = skipped
    paths["json"].write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    for kind in ("html", "json"):
        latest = folder / f"report.{kind}"
        latest.write_text(paths[kind].read_text(encoding="utf-8"), encoding="utf-8")
        paths[f"latest_{kind}"] = latest
    return paths
