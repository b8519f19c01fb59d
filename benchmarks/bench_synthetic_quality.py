"""Is the served model as good as the truth allows? The quickstart's project on synthetic data, scored on the future.

The synthetic generator knows every customer's true probability of every action (the oracle). This benchmark
trains the quickstart's example project (its 90 features, its five actions) exactly as `propensity train` does,
on ``--days`` of history, then scores the **served** bundle on the ``--future`` days after it: cutoffs the served
model never saw, whose labels matured later. On those rows it compares, per action, the served model, the
bundle's plain logistic regression (the baseline, refitted on the same rows as the served model) and the oracle:
ROC-AUC, ECE and log loss, on the rows the oracle covers, with 95% bootstrap intervals (resampling customers)
for the AUC gaps. It also records the report's own test-split figures (the same procedure as of the test split).

Targets (issue #11): the served model within 0.02 AUC of the oracle at 10,000 customers (0.01 at 50,000), never
below the baseline by more than 0.005, ECE ≤ 0.02.

    python -m benchmarks.bench_synthetic_quality                      # 10,000 customers, 180 + 60 days
    python -m benchmarks.bench_synthetic_quality --customers 50000
    python -m benchmarks.bench_synthetic_quality --customers 2000     # a quick look while developing

Writes ``benchmarks/results/synthetic_quality-<customers>.json``. The data are generated and ingested once into
``benchmarks/.data`` (not timed); the training time is reported with the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import yaml
from sklearn.metrics import roc_auc_score

from benchmarks._harness import save
from benchmarks.bench_training import DATA, START, ingested_workspace

TARGET_GAP = {10_000: 0.02, 50_000: 0.01}
TARGET_BASELINE = 0.005
TARGET_ECE = 0.02


def _spec(train_days: int) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(
        (Path(__file__).parents[1] / "src/propensity/datasets/projects/synthetic.yaml").read_text()
    )
    spec["training"] = {"spine": {"data_end": (START + timedelta(days=train_days)).isoformat()}}
    return spec


def _future_rows(ws: Any, action: Any, first: Any, last: Any, data_end: Any) -> pa.Table:
    """The action's eligible rows at the grid cutoffs in [first, last] with labels matured by ``data_end``, and
    their point-in-time features."""
    from propensity.events.log import DuckDBEventLog
    from propensity.features.offline import compute_features
    from propensity.labels.labels import build_labels

    spine = ws.spec.training.spine
    slide = spine.slide.timedelta
    cutoffs = []
    t = spine.align + ((first - spine.align) // slide) * slide
    while t <= last:
        if t >= first:
            cutoffs.append(t)
        t += slide
    with DuckDBEventLog(ws.db_path).connection() as con:
        labels = build_labels(con, action, cutoffs, slide=slide, align=spine.align, data_end=data_end)
        feats = compute_features(con, ws.spec.features, labels.select(["customer_id", "as_of"]))
    mem = duckdb.connect()
    mem.register("l", labels)
    mem.register("f", feats)
    names = ", ".join(f'f."{f.name}"' for f in ws.spec.features)
    out = mem.sql(
        f"SELECT l.customer_id, l.as_of, l.label, {names} FROM l JOIN f USING (customer_id, as_of) "
        "ORDER BY l.as_of, l.customer_id"
    ).to_arrow_table()
    mem.close()
    return out


def _ece(p: np.ndarray, y: np.ndarray) -> float:
    from propensity.training.metrics import expected_calibration_error

    return expected_calibration_error(p, y)


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _figures(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {"roc_auc": float(roc_auc_score(y, p)), "ece": _ece(p, y), "log_loss": _log_loss(p, y)}


def _bootstrap_gap(
    a: np.ndarray, b: np.ndarray, y: np.ndarray, customers: np.ndarray, n: int = 200, seed: int = 0
) -> list[float]:
    """95% interval of AUC(a) − AUC(b), resampling whole customers (their rows are correlated)."""
    rng = np.random.default_rng(seed)
    uniq, inverse = np.unique(customers, return_inverse=True)
    rows_of = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[rows_of], np.arange(len(uniq)))
    ends = np.append(starts[1:], len(rows_of))
    gaps = []
    for _ in range(n):
        pick = rng.integers(0, len(uniq), len(uniq))
        idx = np.concatenate([rows_of[starts[c] : ends[c]] for c in pick])
        yy = y[idx]
        if yy.min() == yy.max():
            continue
        gaps.append(roc_auc_score(yy, a[idx]) - roc_auc_score(yy, b[idx]))
    lo, hi = np.percentile(gaps, [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def _oracle_probabilities(oracle: Path, action: str, rows: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of ``rows`` the oracle covers and their true probabilities (as the training report matches:
    same customer, oracle cutoff within the hour before the row's as_of)."""
    con = duckdb.connect()
    con.register(
        "t", rows.select(["customer_id", "as_of"]).append_column("i", pa.array(np.arange(rows.num_rows)))
    )
    got = con.sql(
        f"""SELECT t.i, o.probability FROM t JOIN read_parquet('{oracle.as_posix()}') o
              ON o.customer_id = t.customer_id AND o.action = ? AND o.eligible
             AND o.cutoff <= t.as_of AND o.cutoff > t.as_of - INTERVAL 1 HOUR ORDER BY t.i""",
        params=[action],
    ).to_arrow_table()
    con.close()
    idx = got.column("i").to_numpy()
    idx, first = np.unique(idx, return_index=True)
    return idx, got.column("probability").to_numpy()[first]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument(
        "--days", type=int, default=180, help="History the model is trained on (quickstart: 180)."
    )
    parser.add_argument(
        "--future", type=int, default=60, help="Days after it, scored (labels mature in them)."
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from propensity.registry.registry import Registry
    from propensity.registry.train import train_project
    from propensity.workspace import Workspace

    total = args.days + args.future
    root = ingested_workspace(
        DATA / f"quality-{args.customers}-{args.days}+{args.future}-{args.seed}",
        args.customers, total, args.seed, _spec(args.days),
    )  # fmt: skip
    ws = Workspace.open(root)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    result = train_project(ws)
    train_seconds = time.perf_counter() - t0
    load_after = os.getloadavg()
    bundle = Registry(ws).load(result.bundle_id)
    oracle = root / "data" / "synthetic" / "oracle.parquet"
    data_end = START + timedelta(days=args.days)
    full_end = START + timedelta(days=total)
    gap_target = TARGET_GAP.get(args.customers, 0.02 if args.customers < 50_000 else 0.01)
    out: dict[str, Any] = {}
    for name in sorted(bundle.actions):
        action = ws.spec.action(name)
        # Oracle cutoffs end 30 days before the data's end; rows must also have matured by then.
        last = min(full_end - action.span.timedelta, START + timedelta(days=total - 30))
        rows = _future_rows(ws, action, data_end, last, full_end)
        y = rows.column("label").to_numpy().astype(np.float64)
        served = np.asarray(bundle.predict(name, rows))
        base = np.asarray(bundle.predict(name, rows, baseline=True))
        idx, truth = _oracle_probabilities(oracle, name, rows)
        yo, customers = y[idx], np.asarray(rows.column("customer_id").to_pylist(), dtype=object)[idx]
        report = result.report_json[name]
        entry: dict[str, Any] = {
            "served_model": report["model_kind"],
            "champion": report["champion"]["why"],
            "future_rows": rows.num_rows,
            "future_positives": int(y.sum()),
            "oracle_rows": len(idx),
            "oracle_positives": int(yo.sum()),
            "future_window": [data_end.isoformat(), last.isoformat()],
            "all_rows": {"served": _figures(served, y), "baseline": _figures(base, y)},
            "oracle_rows_figures": {
                "served": _figures(served[idx], yo),
                "baseline": _figures(base[idx], yo),
                "oracle": _figures(truth, yo),
            },
            "report_test_split": {k: report[k] for k in ("model", "baseline")}
            | {"oracle_roc_auc": report.get("oracle_roc_auc"), "test_rows": report["test_rows"]},
        }
        f = entry["oracle_rows_figures"]
        entry["gap_to_oracle"] = f["oracle"]["roc_auc"] - f["served"]["roc_auc"]
        entry["gap_to_oracle_ci95"] = [-v for v in _bootstrap_gap(served[idx], truth, yo, customers)[::-1]]
        entry["vs_baseline"] = f["served"]["roc_auc"] - f["baseline"]["roc_auc"]
        entry["vs_baseline_ci95"] = _bootstrap_gap(served[idx], base[idx], yo, customers)
        entry["meets"] = {
            f"within {gap_target} of the oracle": entry["gap_to_oracle"] <= gap_target,
            f"not below the baseline by more than {TARGET_BASELINE}": entry["vs_baseline"]
            >= -TARGET_BASELINE,
            f"ECE <= {TARGET_ECE}": f["served"]["ece"] <= TARGET_ECE,
        }
        out[name] = entry
    payload = {
        "customers": args.customers,
        "train_days": args.days,
        "future_days": args.future,
        "seed": args.seed,
        "bundle": result.bundle_id,
        "train_seconds": round(train_seconds, 1),
        "load_average_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "seconds_by_stage": {k: round(v, 2) for k, v in result.seconds.items()},
        "targets": {"gap_to_oracle": gap_target, "below_baseline": TARGET_BASELINE, "ece": TARGET_ECE},
        "actions": out,
    }
    path = save(f"synthetic_quality-{args.customers}", payload)
    print(
        f"trained in {train_seconds:.0f}s (load {load_before[0]:.1f} → {load_after[0]:.1f}); future rows scored:"
    )
    for name, e in out.items():
        f = e["oracle_rows_figures"]
        print(f"{name:>12} [{e['served_model']:>8}] oracle rows {e['oracle_rows']:>6} ({e['oracle_positives']} pos): "
              f"AUC served {f['served']['roc_auc']:.4f} base {f['baseline']['roc_auc']:.4f} oracle "
              f"{f['oracle']['roc_auc']:.4f} (gap {e['gap_to_oracle']:+.4f} {e['gap_to_oracle_ci95']}); ECE served "
              f"{f['served']['ece']:.4f} oracle {f['oracle']['ece']:.4f}; LL {f['served']['log_loss']:.4f} / "
              f"{f['baseline']['log_loss']:.4f} / {f['oracle']['log_loss']:.4f}; "
              f"{'ok' if all(e['meets'].values()) else 'MISS ' + str([k for k, v in e['meets'].items() if not v])}")  # fmt: skip
    print(f"saved {path}")
    print(json.dumps({k: v["meets"] for k, v in out.items()}))


if __name__ == "__main__":
    main()
