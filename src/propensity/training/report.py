"""The evaluation report: one self-contained HTML file (inline SVG, no scripts, no network) plus the same numbers
as JSON, both made from a bundle's manifest alone, so any bundle's report can be rewritten at any time.

JSON layout: one key per action name holding ``model`` and ``baseline`` (``roc_auc``, ``pr_auc``, ``log_loss``,
``brier``, ``ece``, ``lift_top_decile``), ``quality_lift`` (top-decile rate ÷ base rate of the model),
``realised_rate_by_decile``, ``counts`` and, for synthetic data, ``oracle_roc_auc`` and ``oracle_ece`` with the
model's and baseline's figures on the same rows (``on_oracle_rows``); plus ``_meta`` (bundle, versions).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from propensity.core.html import COLORS, CSS, W, axes, legend, line, table, xy
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
            [("LightGBM", COLORS["model"]), ("baseline", COLORS["baseline"]), ("perfect", COLORS["ideal"])]
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
        legend([("LightGBM", COLORS["model"]), ("baseline", COLORS["baseline"]), ("random", COLORS["ideal"])])
    )
    parts.append("</svg>")
    return "".join(parts)


def histogram_svg(metrics: dict[str, Any]) -> str:
    hist = metrics["model"]["histogram"]
    counts, edges = hist["counts"], hist["edges"]
    total = sum(counts) or 1.0
    shares = [c / total for c in counts]
    ymax = max([*shares, 1e-09]) * 1.1
    parts = axes("Score histogram (LightGBM)", "calibrated score", "share of rows", ymax)
    for s, lo, hi in zip(shares, edges[:-1], edges[1:], strict=True):
        x0, y0 = xy(lo, 0, ymax)
        x1, y1 = xy(hi, s, ymax)
        parts.append(
            f'<rect x="{x0:.1f}" y="{y1:.1f}" width="{max(0.5, x1 - x0 - 1):.1f}" height="{y0 - y1:.1f}" fill="{COLORS["model"]}"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def importance_svg(importance: list[dict[str, Any]], top: int = 15) -> str:
    rows = importance[:top]
    vmax = max([r["mean_abs_shap"] for r in rows] + [1e-12])
    height = 20 + 16 * len(rows)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W + 140}" height="{height}" role="img">',
             "<title>Feature importance (mean |SHAP|)</title>"]  # fmt: skip
    for i, r in enumerate(rows):
        y = 10 + 16 * i
        w = (W - 40) * r["mean_abs_shap"] / vmax
        parts.append(
            f'<text x="150" y="{y + 10}" text-anchor="end" font-size="10">{html.escape(r["feature"])}</text>'
        )
        parts.append(f'<rect x="155" y="{y}" width="{w:.1f}" height="12" fill="{COLORS["model"]}"/>')
        parts.append(f'<text x="{160 + w:.1f}" y="{y + 10}" font-size="9">{r["mean_abs_shap"]:.3f}</text>')
    parts.append("</svg>")
    return "".join(parts)


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
        "All figures are on the test split: the latest cutoffs, separated from calibration and training by a full "
        "label window. Probabilities are calibrated on the calibration split.</p>",
    ]
    summary = []
    for name in sorted(k for k in data if k != "_meta"):
        e = data[name]
        summary.append([name, e["test_rows"], e["base_rate"], e["model"]["roc_auc"], e["baseline"]["roc_auc"],
                        e["model"]["ece"], e["baseline"]["ece"], e["quality_lift"],
                        e.get("oracle_roc_auc", "—"), e.get("oracle_ece", "—")])  # fmt: skip
    out.append("<h2>Summary</h2>")
    out.append(table(["action", "test rows", "base rate", "AUC (LightGBM)", "AUC (baseline)", "ECE (LightGBM)",
                       "ECE (baseline)", "quality: lift over random", "oracle AUC", "oracle ECE"], summary))  # fmt: skip
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
                       f"on predictions for rows no model saw in training; calibration: {e['calibration']}. "
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
                       f"{w['test_start']}); calibration: {e['calibration']}</p>")  # fmt: skip
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
                        "LightGBM",
                        "baseline",
                        f"LightGBM (oracle rows, n={o['rows']})",
                        "baseline (oracle rows)",
                        "oracle",
                    ],
                    rows,
                )
            )
        else:
            out.append(table(["metric", "LightGBM", "baseline"], rows))
        c = info.counts
        out.append(
            table(["split", "rows", "positives"], [[k, v["rows"], v["positives"]] for k, v in c.items()])
        )
        out.append("<div class='charts'>" + reliability_svg(m) + gains_svg(m) + histogram_svg(m) + "</div>")
        out.append("<h3>Realised rate by score decile (LightGBM)</h3>")
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
