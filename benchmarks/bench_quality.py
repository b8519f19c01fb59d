"""Quality on real data (issue 11): Dunnhumby's Complete Journey through the product's own project YAML and API/CLI,
next to a plain LightGBM and a logistic regression fitted by this benchmark on the same rows.

Targets (households as of 2017-12-01 00:00 America/New_York):

* ``buy_14d``  (a purchase within 14 days)                                   AUC >= 0.865, ECE <= 0.02
* ``churn_30d`` (basket in the prior 30 days, none in the next 30)            AUC >= 0.86,  ECE <= 0.02
* ``respond_campaign`` (redeemed >= 1 coupon of a received campaign, until
  its end date; campaigns 16-19, each send scored at its own send time)       AUC >= 0.81,  ECE <= 0.03

What runs, all from the example project ``src/propensity/datasets/projects/completejourney.yaml``:

1. the export (``propensity datasets completejourney``) and the ingest of its sources, cached in
   ``benchmarks/.data/quality-completejourney``;
2. buy and churn: the project with ``training.spine.data_end: 2017-12-01`` (nothing later is seen), trained by
   ``train_project``, then ``propensity score --as-of 2017-12-01 --out`` (the CLI) scores every household;
3. respond: the project with ``data_end: 2017-10-04`` (campaign 16's send), trained, then
   ``propensity score --triggers --from 2017-10-04 --to 2017-11-16 --out`` scores every send of campaigns
   16-19 at its own send time;
4. the true outcomes come from the same label code with the whole log; AUC and ECE (10 equal-width bins) with
   bootstrap 95% intervals (rows resampled);
5. baselines fitted here on the product's stored training set (every matured row: train, calibration and test
   splits) and scored on the same evaluation rows: LightGBM with its library defaults, and a logistic regression
   (signed log1p, median imputation + missing flags, one-hot text, standardised, C = 1).

    python -m benchmarks.bench_quality                   # full (about 10 minutes on 2 quiet cores)
    python -m benchmarks.bench_quality --bootstrap 200   # fewer resamples
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from benchmarks._harness import save

DATA = Path(__file__).parent / ".data" / "quality-completejourney"
PROJECT = Path(__file__).parents[1] / "src/propensity/datasets/projects/completejourney.yaml"
AS_OF = "2017-12-01"
RESPOND_FROM, RESPOND_TO = (
    "2017-10-04",
    "2017-11-16",
)  # campaigns 16 (Oct 4), 17 (Oct 18), 18 (Oct 30), 19 (Nov 15)
RESPOND_CAMPAIGNS = {"16", "17", "18", "19"}
TARGETS = {
    "buy_14d": {"auc": 0.865, "ece": 0.02},
    "churn_30d": {"auc": 0.86, "ece": 0.02},
    "respond_campaign": {"auc": 0.81, "ece": 0.03},
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------------------------- workspace
def workspace() -> Path:
    """The example project with the Complete Journey export ingested (cached: a ``ready`` marker)."""
    from propensity.datasets.completejourney import export_completejourney
    from propensity.events.ingest import ingest_attributes, ingest_files
    from propensity.workspace import Workspace

    DATA.mkdir(parents=True, exist_ok=True)
    marker = DATA / "ready"
    fingerprint = PROJECT.read_text(encoding="utf-8")
    if marker.exists() and marker.read_text(encoding="utf-8") == fingerprint:
        return DATA
    for old in (DATA / ".propensity", DATA / "data"):
        if old.exists():
            import shutil

            shutil.rmtree(old)
    log("exporting Complete Journey")
    export_completejourney(DATA / "data" / "completejourney")
    (DATA / "propensity.yaml").write_text(fingerprint, encoding="utf-8")
    ws = Workspace.open(DATA, require_spec=True)
    log("ingesting")
    for source in ws.spec.sources:
        ingest_files(ws, [str(ws.spec.resolve(source.path))], source=source.name)
    for attrs in ws.spec.attributes:
        ingest_attributes(ws, attrs)
    marker.write_text(fingerprint, encoding="utf-8")
    return DATA


def write_spec(root: Path, *, data_end: str, actions: list[str]) -> None:
    """The example project as shipped, with the data's end moved back (nothing after it is seen in training)."""
    spec = yaml.safe_load(PROJECT.read_text(encoding="utf-8"))
    spec.setdefault("training", {}).setdefault("spine", {})["data_end"] = data_end
    spec["actions"] = [a for a in spec["actions"] if _name(a) in actions]
    spec["policies"]["actions"] = {k: v for k, v in spec["policies"]["actions"].items() if k in actions}
    (root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")


def _name(action: dict[str, Any]) -> str:
    from propensity.config.actions import Action

    return Action.model_validate(action).name


def train(root: Path, actions: list[str]) -> tuple[str, Path, dict[str, Any]]:
    from propensity.registry.train import train_project
    from propensity.workspace import Workspace

    ws = Workspace.open(root, require_spec=True)
    t0 = time.perf_counter()
    result = train_project(ws, actions=actions)
    log(f"trained {result.bundle_id} in {time.perf_counter() - t0:.0f}s; skipped: {result.skipped or 'none'}")
    report = {a: result.report_json.get(a, {}) for a in actions}
    return result.bundle_id, ws.state_dir / "training" / result.training_set, report


def cli_score(root: Path, bundle: str, out: Path, args: list[str]) -> pa.Table:
    """``propensity score ... --out`` in a child process: the rows a user would get."""
    cmd = [
        sys.executable,
        "-m",
        "propensity",
        "score",
        "-w",
        str(root),
        "--bundle",
        bundle,
        "--out",
        str(out),
        *args,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    log(f"scored with the CLI in {time.perf_counter() - t0:.0f}s -> {out.name}")
    return pq.read_table(out)


# ------------------------------------------------------------------------------------------------- truth
def truth(root: Path, action_name: str, **kw: Any) -> pa.Table:
    """The true outcome of each scored row, from the product's label code on the whole log."""
    from propensity.events.log import DuckDBEventLog
    from propensity.labels.labels import build_labels
    from propensity.workspace import Workspace

    ws = Workspace.open(root, require_spec=True)
    action = ws.spec.action(action_name)
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        end = con.execute("SELECT max(event_time) FROM events").fetchall()[0][0]
        return build_labels(con, action, data_end=end, zone=ws.spec.timezone, **kw)


def features_of(root: Path, spine: pa.Table) -> pa.Table:
    from propensity.events.log import DuckDBEventLog
    from propensity.features import compute_features
    from propensity.workspace import Workspace

    ws = Workspace.open(root, require_spec=True)
    with DuckDBEventLog(ws.db_path).connection(read_only=True) as con:
        return compute_features(con, ws.spec.features, spine)


# ------------------------------------------------------------------------------------------------- metrics
def ece(p: np.ndarray, y: np.ndarray) -> float:
    from propensity.training.metrics import expected_calibration_error

    return float(expected_calibration_error(p, y))


def auc(p: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def with_intervals(p: np.ndarray, y: np.ndarray, resamples: int, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n = len(y)
    aucs, eces = [], []
    for _ in range(resamples):
        i = rng.integers(0, n, n)
        if 0 < y[i].sum() < n:
            aucs.append(auc(p[i], y[i]))
            eces.append(ece(p[i], y[i]))
    q = lambda v: [round(float(np.quantile(v, 0.025)), 4), round(float(np.quantile(v, 0.975)), 4)]  # noqa: E731
    return {
        "roc_auc": round(auc(p, y), 4),
        "roc_auc_95": q(aucs),
        "ece": round(ece(p, y), 4),
        "ece_95": q(eces),
        "rows": int(n),
        "positives": int(y.sum()),
        "mean_score": round(float(p.mean()), 4),
        "base_rate": round(float(y.mean()), 4),
    }


# ------------------------------------------------------------------------------------------------ baselines
def _matrix(
    table: pa.Table, names: list[str], vocab: dict[str, list[str]] | None = None
) -> tuple[np.ndarray, dict[str, list[str]], list[str]]:
    """Numbers as floats (NaN for null), text as category codes (unseen → NaN); returns the vocabularies."""
    vocab = {} if vocab is None else vocab
    cols, kinds = [], []
    for n in names:
        col = table.column(n)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            values = vocab.setdefault(n, sorted({v for v in col.to_pylist() if v is not None}))
            codes = pc.index_in(col, value_set=pa.array(values, pa.string()))
            cols.append(codes.to_numpy(zero_copy_only=False).astype(np.float64))
            kinds.append("text")
        else:
            cols.append(col.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64))
            kinds.append("number")
    return np.column_stack(cols) if cols else np.zeros((table.num_rows, 0)), vocab, kinds


def baselines(train_rows: pa.Table, test_rows: pa.Table, names: list[str]) -> dict[str, np.ndarray]:
    import lightgbm as lgb
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(train_rows.column("label").to_numpy(zero_copy_only=False), dtype=int)
    x_tr, vocab, kinds = _matrix(train_rows, names)
    x_te, _, _ = _matrix(test_rows, names, vocab)
    cat = [i for i, k in enumerate(kinds) if k == "text"]
    gbm = lgb.LGBMClassifier(random_state=0, verbose=-1, n_jobs=2)
    gbm.fit(x_tr, y, categorical_feature=cat or "auto")
    out = {"lightgbm": gbm.predict_proba(x_te)[:, 1]}

    def design(x: np.ndarray, stats: dict[str, Any] | None) -> tuple[np.ndarray, dict[str, Any]]:
        num = [i for i, k in enumerate(kinds) if k == "number"]
        z = np.sign(x[:, num]) * np.log1p(np.abs(x[:, num]))
        missing = np.isnan(z)
        if stats is None:
            med = np.nanmedian(np.where(np.isfinite(z), z, np.nan), axis=0)
            stats = {"median": np.where(np.isnan(med), 0.0, med)}
        z = np.where(missing | ~np.isfinite(z), stats["median"], z)
        parts = [z, missing.astype(float)]
        for i in cat:
            k = len(vocab[names[i]])
            onehot = np.zeros((x.shape[0], k + 1))
            codes = np.where(np.isnan(x[:, i]), k, x[:, i]).astype(int)
            onehot[np.arange(x.shape[0]), codes] = 1.0
            parts.append(onehot)
        d = np.column_stack(parts)
        if "mean" not in stats:
            stats["mean"], stats["scale"] = d.mean(axis=0), d.std(axis=0)
            stats["scale"] = np.where(stats["scale"] > 0, stats["scale"], 1.0)
        return (d - stats["mean"]) / stats["scale"], stats

    d_tr, stats = design(x_tr, None)
    d_te, _ = design(x_te, stats)
    logit = LogisticRegression(C=1.0, max_iter=5000).fit(d_tr, y)
    out["logistic"] = logit.predict_proba(d_te)[:, 1]
    return out


def training_rows(folder: Path, action_name: str, root: Path) -> pa.Table:
    from propensity.training.dataset import load_training_set
    from propensity.workspace import Workspace

    ws = Workspace.open(root, require_spec=True)
    return load_training_set(folder, ws.spec.action(action_name)).table


# --------------------------------------------------------------------------------------------------- main
def evaluate(
    name: str, scored: pa.Table, outcome: pa.Table, key: list[str], root: Path, folder: Path, resamples: int
) -> dict[str, Any]:
    """Join the product's score rows to the outcomes on ``key``; the baselines score the same rows."""
    import duckdb

    con = duckdb.connect()
    con.register(
        "s", scored.filter(pc.and_(pc.equal(scored.column("action"), name), scored.column("eligible")))
    )
    con.register("o", outcome)
    on = " AND ".join(f"s.{k} = o.{k}" for k in key)
    rows = con.sql(
        f"SELECT o.customer_id, o.as_of, o.trigger_id, o.campaign_id, o.label, s.score FROM s JOIN o ON {on} "
        "ORDER BY o.as_of, o.customer_id, o.trigger_id"
    ).to_arrow_table()
    n_scored, n_truth = con.sql("SELECT count(*) FROM s").fetchall()[0][0], outcome.num_rows
    con.close()
    y = np.asarray(rows.column("label").to_numpy(zero_copy_only=False), dtype=int)
    p = np.asarray(rows.column("score").to_numpy(zero_copy_only=False), dtype=float)
    result: dict[str, Any] = {
        "eligible_scored": int(n_scored),
        "outcome_rows": int(n_truth),
        "joined": rows.num_rows,
        "product": with_intervals(p, y, resamples),
        "target": TARGETS[name],
    }
    train_rows = training_rows(folder, name, root)
    names = [c for c in train_rows.column_names if c not in
             ("customer_id", "as_of", "label", "label_end", "campaign_id", "trigger_id", "split")]  # fmt: skip
    spine = rows.select(["customer_id", "as_of", "trigger_id"])
    feats = features_of(root, spine)
    for model, q in baselines(train_rows, feats, names).items():
        result[model] = with_intervals(q, y, resamples)
    result["training_rows"] = {
        s: int(pc.sum(pc.equal(train_rows.column("split"), s)).as_py() or 0)
        for s in ("train", "calibration", "test")
    }
    result["meets_target"] = bool(
        result["product"]["roc_auc"] >= TARGETS[name]["auc"]
        and result["product"]["ece"] <= TARGETS[name]["ece"]
    )
    log(
        f"{name}: product AUC {result['product']['roc_auc']} {result['product']['roc_auc_95']} ECE "
        f"{result['product']['ece']} | lightgbm {result['lightgbm']['roc_auc']} / {result['lightgbm']['ece']} | "
        f"logistic {result['logistic']['roc_auc']} / {result['logistic']['ece']} ({rows.num_rows} rows)"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% intervals"
    )
    parser.add_argument("--only", choices=["cutoff", "respond"], help="run one half")
    args = parser.parse_args()
    started = time.perf_counter()
    load = os.getloadavg()
    root = workspace()
    out: dict[str, Any] = {"as_of": AS_OF, "timezone": "America/New_York", "actions": {}, "seconds": {}}
    from propensity.config.calendar import local_time

    if args.only in (None, "cutoff"):
        t0 = time.perf_counter()
        write_spec(root, data_end=AS_OF, actions=["buy_14d", "churn_30d"])
        bundle, folder, report = train(root, ["buy_14d", "churn_30d"])
        scored = cli_score(root, bundle, root / "scores-cutoff.parquet", ["--as-of", AS_OF])
        t = local_time(AS_OF, "America/New_York")
        for name in ("buy_14d", "churn_30d"):
            outcome = truth(root, name, cutoffs=[t])
            out["actions"][name] = evaluate(
                name, scored, outcome, ["customer_id", "as_of"], root, folder, args.bootstrap
            )
            out["actions"][name]["report"] = report.get(name, {})
        out["seconds"]["buy_churn"] = round(time.perf_counter() - t0, 1)
    if args.only in (None, "respond"):
        t0 = time.perf_counter()
        write_spec(root, data_end=RESPOND_FROM, actions=["respond_campaign"])
        bundle, folder, report = train(root, ["respond_campaign"])
        scored = cli_score(root, bundle, root / "scores-respond.parquet",
                           ["--triggers", "--from", RESPOND_FROM, "--to", RESPOND_TO])  # fmt: skip
        lo, hi = local_time(RESPOND_FROM, "America/New_York"), local_time(RESPOND_TO, "America/New_York")
        outcome = truth(root, "respond_campaign", cutoffs=[lo], until=hi)
        outcome = outcome.filter(pc.is_in(outcome.column("campaign_id"), pa.array(sorted(RESPOND_CAMPAIGNS))))
        res = evaluate("respond_campaign", scored, outcome, ["trigger_id"], root, folder, args.bootstrap)
        res["campaigns"] = sorted(RESPOND_CAMPAIGNS, key=int)
        res["report"] = report.get("respond_campaign", {})
        out["actions"]["respond_campaign"] = res
        out["seconds"]["respond"] = round(time.perf_counter() - t0, 1)
    out["seconds"]["total"] = round(time.perf_counter() - started, 1)
    out["load_average_at_start"] = [round(x, 2) for x in load]
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path = save("quality" if args.only is None else f"quality-{args.only}", out)
    log(f"wrote {path}")
    summary = {a: {"product": (r["product"]["roc_auc"], r["product"]["ece"]), "lightgbm": (r["lightgbm"]["roc_auc"], r["lightgbm"]["ece"]),
                   "logistic": (r["logistic"]["roc_auc"], r["logistic"]["ece"]), "meets": r["meets_target"]}
               for a, r in out["actions"].items()}  # fmt: skip
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
