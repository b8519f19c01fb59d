"""Experiments run elsewhere: an assignment table (id, arm, assigned_at) and outcomes, imported and reported.

An imported experiment needs no event log, no scoring run and no bundle. ``import_experiment`` validates the
tables against the schema below and stores one row per assigned id under ``.propensity/experiments/<name>/``
(``rows.parquet`` and ``experiment.json``: arms, control, outcome kinds, and every rejected row counted with its
reason). ``experiment_summary`` compares each treatment arm with the control arm, per outcome and per segment:

* a **binary** outcome (yes/no, true/false, 1/0, ...) as a difference in rates with Newcombe's hybrid score
  interval (and the normal "Wald" interval beside it), and the relative lift with its log-ratio interval;
* a **continuous** outcome (spend) as a difference in means with the 95% Wald interval
  ``d ± 1.96·√(s_t²/n_t + s_c²/n_c)`` (unequal variances), and a two-sided p-value.

With covariates (any other column of the tables), each treatment arm gets a cross-fitted two-model uplift
estimator on each binary outcome, evaluated with scikit-uplift's normalised Qini and AUUC, uplift@k and a
permutation test against random ordering (:mod:`propensity.experiments.uplift`).

Schema. Assignments: an id column (text or integer; when absent, the row number), an arm column (text; never
null), optionally ``assigned_at`` (a timestamp). Outcomes: the same id column and one column per outcome; they may
be the assignment table's own columns. Rejected rows, each counted by reason: a missing id or arm, an
unreadable ``assigned_at``, an id assigned twice (all its rows when the arms differ), an outcome row repeated for
one id. An assigned id without an outcome row has outcome 0 (``missing_outcome="zero"``, counted) or is left
out (``"drop"``, counted).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from propensity.core.errors import PropensityError
from propensity.core.frames import to_arrow
from propensity.core.values import ValueReadError, id_text, numeric_text, read_binary
from propensity.experiments.lift import Z95, lift
from propensity.workspace import Workspace

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CONTROL_WORDS = (
    "control",
    "holdout",
    "no e-mail",
    "no email",
    "no_email",
    "none",
    "no treatment",
    "placebo",
)
ID = "id"
ARM = "arm"
ASSIGNED_AT = "assigned_at"


class ExperimentImportError(PropensityError):
    """The tables do not fit the experiment schema; the message names the column or value."""


@dataclass
class ImportResult:
    name: str
    path: Path
    rows: int
    arms: dict[str, int]
    control: str
    outcomes: dict[str, str]
    rejected: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "rows": self.rows,
            "arms": self.arms,
            "control": self.control,
            "outcomes": self.outcomes,
            "rejected": self.rejected,
            "notes": self.notes,
        }


def experiments_dir(workspace: Workspace) -> Path:
    return workspace.state_dir / "experiments"


def _column(table: pa.Table, name: str, what: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise ExperimentImportError(
            f"{what}: no column {name!r}; the table has {', '.join(table.column_names) or '(none)'}"
        )
    return table.column(name)


def _guess_control(arms: list[str]) -> str | None:
    hits = [a for a in arms if any(w in a.lower() for w in _CONTROL_WORDS)]
    return hits[0] if len(hits) == 1 else None


def _outcome_kind(col: pa.ChunkedArray, name: str) -> str:
    try:
        r = read_binary(col, what=f"outcome {name}")
        if not r.unreadable:
            return "binary"
    except ValueReadError:
        pass
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_decimal(col.type):
        return "continuous"
    if numeric_text(col.combine_chunks() if col.num_chunks else pa.array([], pa.string())) is not None:
        return "continuous"
    raise ExperimentImportError(
        f"outcome {name!r}: its values are neither yes/no nor numbers (type {col.type}); an outcome is binary "
        "(converted: yes/no) or continuous (spend: a number)"
    )


def _timestamps(col: pa.ChunkedArray) -> tuple[pa.Array, int]:
    """A column as UTC timestamps; returns the values (null where unreadable) and how many were unreadable."""
    arr = col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    if pa.types.is_timestamp(arr.type):
        if arr.type.tz is None:
            arr = arr.cast(pa.timestamp(arr.type.unit, tz="UTC"))
        return arr.cast(pa.timestamp("us", tz="UTC")), 0
    if pa.types.is_date(arr.type):
        return arr.cast(pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC")), 0
    out: list[datetime | None] = []
    bad = 0
    for v in arr.cast(pa.string()).to_pylist():
        if v is None or not v.strip():
            out.append(None)
            continue
        try:
            t = datetime.fromisoformat(v.strip().replace("Z", "+00:00"))
            out.append(t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC))
        except ValueError:
            out.append(None)
            bad += 1
    return pa.array(out, pa.timestamp("us", tz="UTC")), bad


def import_experiment(
    workspace: Workspace,
    assignments: Any,
    outcomes: Any = None,
    *,
    name: str,
    arm: str = "arm",
    id_column: str | None = None,
    assigned_at: str | None = None,
    control: str | None = None,
    outcome_columns: list[str] | None = None,
    kinds: dict[str, str] | None = None,
    segments: list[str] | None = None,
    covariates: list[str] | None = None,
    missing_outcome: str = "zero",
) -> ImportResult:
    """Validate and store an experiment (see the module docstring). ``assignments`` and ``outcomes`` are any
    tables :func:`propensity.core.frames.to_arrow` reads; ``outcomes`` may be None when the assignment table
    holds the outcome columns. ``kinds`` forces an outcome's kind (``binary`` or ``continuous``)."""
    if not _NAME.match(name):
        raise ExperimentImportError(f"experiment name {name!r}: use letters, digits, '_', '-' or '.'")
    if missing_outcome not in ("zero", "drop"):
        raise ExperimentImportError("missing_outcome must be 'zero' or 'drop'")
    a = to_arrow(assignments, what="assignments")
    o = None if outcomes is None else to_arrow(outcomes, what="outcomes")
    rejected: Counter[str] = Counter()
    notes: list[str] = []
    n_in = a.num_rows
    # ids
    if id_column is None:
        id_column = next((c for c in ("id", "customer_id") if c in a.column_names), None)
    if id_column is None:
        if o is not None:
            raise ExperimentImportError(
                "assignments: no id column (give --id); it joins the assignments to the outcomes"
            )
        ids = pa.array([str(i) for i in range(1, n_in + 1)], pa.string())
        notes.append("no id column: rows are identified by their row number (1-based)")
    else:
        ids = id_text(_column(a, id_column, "assignments"))
    arms = _column(a, arm, "assignments").cast(pa.string())
    arms = pc.utf8_trim_whitespace(arms.combine_chunks() if arms.num_chunks else pa.array([], pa.string()))
    keep = np.ones(n_in, dtype=bool)
    no_id = np.asarray(pc.is_null(ids).to_numpy(zero_copy_only=False), bool)
    rejected["id: missing"] += int(no_id.sum())
    keep &= ~no_id
    no_arm = np.asarray(
        pc.or_(pc.is_null(arms), pc.equal(arms, "")).fill_null(True).to_numpy(zero_copy_only=False), bool
    )
    rejected["arm: missing"] += int((no_arm & keep).sum())
    keep &= ~no_arm
    when = None
    if assigned_at is not None:
        when, _ = _timestamps(_column(a, assigned_at, "assignments"))
        bad_time = np.asarray(pc.is_null(when).to_numpy(zero_copy_only=False), bool)
        rejected[f"{assigned_at}: missing or unreadable time"] += int((bad_time & keep).sum())
        keep &= ~bad_time
    # repeated ids: the same arm twice keeps the first row; two arms reject every row of that id
    id_list = ids.to_pylist()
    arm_list = arms.to_pylist()
    seen: dict[str, str] = {}
    conflict: set[str] = set()
    first = np.zeros(n_in, dtype=bool)
    for i in np.flatnonzero(keep).tolist():
        k = id_list[i]
        if k in seen:
            if seen[k] != arm_list[i]:
                conflict.add(k)
            else:
                rejected["id: assigned twice (later row dropped)"] += 1
        else:
            seen[k] = arm_list[i]
            first[i] = True
    if conflict:
        hit = np.array([v in conflict for v in id_list]) & keep
        rejected["id: assigned to two arms (all its rows rejected)"] += int(hit.sum())
        first &= ~hit
    keep = first
    arm_counts = Counter(arm_list[i] for i in np.flatnonzero(keep).tolist())
    if len(arm_counts) < 2:
        raise ExperimentImportError(
            f"assignments: {arm!r} has {len(arm_counts)} arm(s) ({', '.join(arm_counts) or 'none'}); an experiment "
            "needs a control and at least one treatment arm"
        )
    if control is None:
        control = _guess_control(sorted(arm_counts))
        if control is None:
            raise ExperimentImportError(
                f"which arm is the control? give --control, one of: {', '.join(sorted(arm_counts))}"
            )
        notes.append(f"control arm taken to be {control!r} (by its name)")
    if control not in arm_counts:
        raise ExperimentImportError(
            f"--control {control!r} is not an arm; the arms are: {', '.join(sorted(arm_counts))}"
        )
    idx = np.flatnonzero(keep)
    base = a.take(pa.array(idx))
    columns: dict[str, Any] = {ID: ids.take(pa.array(idx)), ARM: arms.take(pa.array(idx))}
    if when is not None:
        columns[ASSIGNED_AT] = when.take(pa.array(idx))
    # outcomes: from the assignment table, or joined by id
    source = base
    if o is not None:
        assert id_column is not None
        oid_name = (
            id_column
            if id_column in o.column_names
            else next((c for c in ("id", "customer_id") if c in o.column_names), None)
        )
        if oid_name is None:
            raise ExperimentImportError(f"outcomes: no id column {id_column!r} to join on")
        oids = id_text(o.column(oid_name)).to_pylist()
        at: dict[str, int] = {}
        repeated: set[str] = set()
        for i, k in enumerate(oids):
            if k is None:
                rejected["outcome row: missing id"] += 1
            elif k in at:
                repeated.add(k)
            else:
                at[k] = i
        if repeated:
            rejected["outcome rows: repeated for one id (the id is left out)"] += sum(
                1 for k in oids if k in repeated
            )
        assigned = set(columns[ID].to_pylist())
        orphans = sum(1 for k in at if k not in assigned)
        if orphans:
            notes.append(f"{orphans:,} outcome row(s) have an id that was not assigned; they were ignored")
        assigned_ids = columns[ID].to_pylist()
        pos = [at.get(k) for k in assigned_ids]
        valid = np.array([p is not None for p in pos], dtype=bool)
        keep_rows = np.array([k not in repeated for k in assigned_ids], dtype=bool)
        valid &= keep_rows
        lacking = int((~valid & keep_rows).sum())
        if lacking:
            if missing_outcome == "drop":
                rejected["no outcome row (left out: missing_outcome=drop)"] += lacking
                keep_rows &= valid
            else:
                notes.append(f"{lacking:,} assigned id(s) have no outcome row: their outcomes count as 0")
        source = o.take(pa.array([p if p is not None else 0 for p in pos], pa.int64()))
        outcome_mask = valid
    else:
        keep_rows = np.ones(base.num_rows, bool)
        outcome_mask = np.ones(base.num_rows, bool)
    reserved = {id_column, arm, assigned_at}
    if outcome_columns is None:
        raise ExperimentImportError("give the outcome column(s): --outcome converted --outcome spend")
    kinds = dict(kinds or {})
    outcome_kinds: dict[str, str] = {}
    for oc in outcome_columns:
        col = _column(source, oc, "outcomes")
        kind = kinds.get(oc) or _outcome_kind(col, oc)
        if kind not in ("binary", "continuous"):
            raise ExperimentImportError(f"outcome {oc!r}: kind must be binary or continuous, got {kind!r}")
        if kind == "binary":
            r = read_binary(col, what=f"outcome {oc}")
            values = r.values.to_numpy(zero_copy_only=False).astype(np.float64)
            for v, c in r.unreadable.items():
                rejected[f"{oc}: unreadable value {v!r} (left out of {oc})"] += c
        else:
            arr = col.combine_chunks() if col.num_chunks else pa.array([], col.type)
            num = numeric_text(arr) if pa.types.is_string(arr.type) else arr.cast(pa.float64())
            if num is None:
                raise ExperimentImportError(f"outcome {oc!r}: not numbers")
            values = num.to_numpy(zero_copy_only=False).astype(np.float64)
            values[~np.isfinite(values)] = np.nan
        values = np.where(outcome_mask, values, 0.0 if missing_outcome == "zero" else np.nan)
        missing = int(np.isnan(values[keep_rows]).sum())
        if missing:
            rejected[f"{oc}: missing value (left out of {oc})"] += missing
        columns[oc] = pa.array(values, pa.float64(), from_pandas=True)
        outcome_kinds[oc] = kind
        reserved.add(oc)
    seg_names = list(segments or [])
    for sname in seg_names:
        src = base if sname in base.column_names else source
        col = _column(src, sname, "segments")
        columns[f"segment:{sname}"] = col.cast(pa.string())
    cov = covariates
    if cov is None:
        cov = [c for c in base.column_names if c not in reserved]
        if o is not None:
            cov += [c for c in source.column_names if c not in reserved and c not in cov and c != id_column]
    for cname in cov:
        src = base if cname in base.column_names else source
        columns[f"x:{cname}"] = src.column(cname)
    table = pa.table(columns).filter(pa.array(keep_rows))
    folder = experiments_dir(workspace) / name
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "rows.parquet", compression="zstd")
    arms_final = Counter(table.column(ARM).to_pylist())
    result = ImportResult(
        name=name,
        path=folder,
        rows=table.num_rows,
        arms=dict(sorted(arms_final.items())),
        control=control,
        outcomes=outcome_kinds,
        rejected={k: v for k, v in sorted(rejected.items()) if v},
        notes=notes,
    )
    meta = {
        **result.to_json(),
        "input_rows": n_in,
        "segments": seg_names,
        "covariates": cov,
        "assigned_at": assigned_at is not None,
        "imported_at": datetime.now(UTC).isoformat(),
    }
    meta.pop("path")
    (folder / "experiment.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return result


def list_imported(workspace: Workspace) -> list[str]:
    folder = experiments_dir(workspace)
    return sorted(p.parent.name for p in folder.glob("*/experiment.json")) if folder.exists() else []


def load_imported(workspace: Workspace, name: str) -> tuple[dict[str, Any], pa.Table]:
    folder = experiments_dir(workspace) / name
    if not (folder / "experiment.json").exists():
        known = ", ".join(list_imported(workspace)) or "(none imported)"
        raise ExperimentImportError(f"no imported experiment {name!r}; known: {known}")
    meta = json.loads((folder / "experiment.json").read_text(encoding="utf-8"))
    return meta, pq.read_table(folder / "rows.parquet")


# ------------------------------------------------------------------------------------------------ numbers
def _p_two_sided(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0))


def mean_difference(treated: np.ndarray, control: np.ndarray, z: float = Z95) -> dict[str, Any]:
    """Difference in means with the 95% Wald interval (unequal variances) and a two-sided p-value.

    >>> r = mean_difference(np.array([3.0, 5.0, 4.0, 6.0]), np.array([2.0, 3.0, 4.0, 3.0]))
    >>> round(r["difference"], 3), [round(v, 3) for v in r["difference_ci"]]
    (1.5, [0.003, 2.997])
    """
    t = treated[~np.isnan(treated)]
    c = control[~np.isnan(control)]
    n_t, n_c = len(t), len(c)
    out: dict[str, Any] = {"n_treated": n_t, "n_control": n_c,
                           "mean_treated": float(t.mean()) if n_t else None,
                           "mean_control": float(c.mean()) if n_c else None,
                           "difference": None, "difference_ci": None, "relative": None, "p_value": None}  # fmt: skip
    if n_t < 2 or n_c < 2:
        return out
    d = float(t.mean() - c.mean())
    se = math.sqrt(float(t.var(ddof=1)) / n_t + float(c.var(ddof=1)) / n_c)
    out["difference"] = d
    out["difference_ci"] = [d - z * se, d + z * se]
    out["sd_treated"], out["sd_control"] = float(t.std(ddof=1)), float(c.std(ddof=1))
    out["relative"] = d / float(c.mean()) if c.mean() != 0 else None
    out["p_value"] = _p_two_sided(d / se) if se > 0 else (0.0 if d else 1.0)
    return out


def rate_difference(treated: np.ndarray, control: np.ndarray, z: float = Z95) -> dict[str, Any]:
    """Difference in rates: Newcombe's hybrid score interval (the one to read), the Wald interval beside it,
    the relative lift's log-ratio interval, and a two-sided p-value (pooled z-test)."""
    t = treated[~np.isnan(treated)]
    c = control[~np.isnan(control)]
    x_t, n_t, x_c, n_c = int(t.sum()), len(t), int(c.sum()), len(c)
    out = lift(x_t=x_t, n_t=n_t, x_c=x_c, n_c=n_c, z=z).to_json()
    if n_t and n_c:
        p_t, p_c = x_t / n_t, x_c / n_c
        se = math.sqrt(p_t * (1 - p_t) / n_t + p_c * (1 - p_c) / n_c)
        out["absolute_ci_wald"] = [p_t - p_c - z * se, p_t - p_c + z * se]
        pooled = (x_t + x_c) / (n_t + n_c)
        se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_c))
        out["p_value"] = _p_two_sided((p_t - p_c) / se0) if se0 > 0 else 1.0
    return out


def _compare(kind: str, y: np.ndarray, arms: np.ndarray, arm: str, control: str) -> dict[str, Any]:
    fn = rate_difference if kind == "binary" else mean_difference
    return fn(y[arms == arm], y[arms == control])


def _covariates(table: pa.Table) -> tuple[np.ndarray, list[str]]:
    from propensity.training.encoding import FeatureEncoder

    names = [c for c in table.column_names if c.startswith("x:")]
    if not names:
        return np.empty((table.num_rows, 0)), []
    feats = pa.table({n: _plain(table.column(n)) for n in names})
    return FeatureEncoder.fit(feats, names).matrix(feats), [n[2:] for n in names]


def _plain(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_boolean(col.type) or pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        return col
    if pa.types.is_string(col.type) or pa.types.is_dictionary(col.type) or pa.types.is_large_string(col.type):
        return col.cast(pa.string())
    if pa.types.is_decimal(col.type):
        return col.cast(pa.float64())
    return col.cast(pa.string())


def experiment_summary(
    meta: dict[str, Any],
    rows: pa.Table,
    *,
    with_uplift: bool = True,
    seed: int = 0,
    permutations: int = 500,
) -> dict[str, Any]:
    """Every treatment arm against the control, per outcome, overall and per segment; uplift where it can be
    fitted. Returns the JSON the report and ``--json`` print; per-row uplift under ``_uplift_rows`` (arrays)."""
    from propensity.experiments.uplift import (
        UpliftDataError,
        check_uplift_data,
        cross_fitted_uplift,
        evaluate_predictions,
    )

    control = meta["control"]
    arms = np.asarray(rows.column(ARM).to_pylist(), dtype=object)
    treatments = [a for a in meta["arms"] if a != control]
    segs = {
        s: np.asarray(rows.column(f"segment:{s}").to_pylist(), dtype=object) for s in meta.get("segments", [])
    }
    out: dict[str, Any] = {"experiment": meta["name"], "control": control, "arms": meta["arms"],
                           "rows": rows.num_rows, "rejected": meta.get("rejected", {}),
                           "notes": meta.get("notes", []), "outcomes": {}}  # fmt: skip
    x, names = _covariates(rows) if with_uplift else (np.empty((rows.num_rows, 0)), [])
    ids = [str(v) for v in rows.column(ID).to_pylist()]
    uplift_rows: dict[str, np.ndarray] = {}
    for oc, kind in meta["outcomes"].items():
        y = rows.column(oc).to_numpy(zero_copy_only=False).astype(np.float64)
        entry: dict[str, Any] = {"kind": kind, "method": (
            "difference in rates: Newcombe hybrid score interval (Wald beside it); relative: log-ratio interval"
            if kind == "binary" else "difference in means: 95% Wald interval, unequal variances"), "arms": {}}  # fmt: skip
        for arm in treatments:
            res: dict[str, Any] = {"(all)": _compare(kind, y, arms, arm, control)}
            for sname, sv in segs.items():
                for val in sorted({v for v in sv.tolist() if v is not None}):
                    m = sv == val
                    res[f"{sname}={val}"] = _compare(kind, y[m], arms[m], arm, control)
            arm_entry: dict[str, Any] = {"comparison": res}
            if with_uplift and kind == "binary":
                sel = (arms == arm) | (arms == control)
                sel &= ~np.isnan(y)
                if not names:
                    arm_entry["uplift"] = {"skipped": "no covariate columns to model uplift with"}
                else:
                    t = arms[sel] == arm
                    yy = y[sel].astype(np.int64)
                    try:
                        check_uplift_data(t, yy)
                        sel_ids = [i for i, s in zip(ids, sel.tolist(), strict=True) if s]
                        u = cross_fitted_uplift(x[sel], t, yy, sel_ids, seed=seed)
                        arm_entry["uplift"] = evaluate_predictions(
                            u, t, yy, seed=seed, permutations=permutations
                        ).to_json()
                        full = np.full(len(y), np.nan)
                        full[sel] = u
                        uplift_rows[f"{oc}:{arm}"] = full
                    except UpliftDataError as exc:
                        arm_entry["uplift"] = {"skipped": str(exc)}
            entry["arms"][arm] = arm_entry
        out["outcomes"][oc] = entry
    out["_uplift_rows"] = uplift_rows
    return out


def uplift_table(rows: pa.Table, summary: dict[str, Any]) -> pa.Table:
    """One row per experiment row: id, arm, and each (outcome, arm) model's out-of-fold predicted uplift."""
    cols: dict[str, Any] = {"id": rows.column(ID), "arm": rows.column(ARM)}
    for key, values in summary.get("_uplift_rows", {}).items():
        oc, arm = key.split(":", 1)
        cols[f"uplift__{oc}__{arm}"] = pa.array(values, pa.float64(), from_pandas=True)
    return pa.table(cols)


# ------------------------------------------------------------------------------------------------ HTML
def _num(v: Any, pct: bool) -> str:
    if v is None:
        return "—"
    return f"{100 * v:+.2f}%" if pct else f"{v:+,.4g}"


def _interval(ci: Any, pct: bool) -> str:
    if ci is None:
        return "—"
    return f"[{_num(ci[0], pct)}, {_num(ci[1], pct)}]"


def render_summary_html(summary: dict[str, Any]) -> str:
    """The imported experiment's report: one table per outcome (arm × segment), and the uplift figures."""
    import html as h

    from propensity.core.html import CSS, table

    name = h.escape(str(summary["experiment"]))
    out = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Experiment {name}</title><style>{CSS}</style></head><body>",
        f"<h1>Experiment {name}</h1>",
        f"<p class='note'>{summary['rows']:,} rows; control arm {h.escape(summary['control'])}; arms: "
        + ", ".join(f"{h.escape(k)} ({v:,})" for k, v in summary["arms"].items())
        + ".</p>",
    ]
    if summary.get("rejected"):
        out.append("<p class='warn'>Rejected: " + "; ".join(
            f"{h.escape(k)}: {v:,}" for k, v in summary["rejected"].items()) + "</p>")  # fmt: skip
    for note in summary.get("notes", []):
        out.append(f"<p class='note'>{h.escape(note)}</p>")
    for oc, e in summary["outcomes"].items():
        binary = e["kind"] == "binary"
        out.append(f"<h2>{h.escape(oc)} ({e['kind']})</h2><p class='note'>{h.escape(e['method'])}</p>")
        rows = []
        for arm, a in e["arms"].items():
            for seg, v in a["comparison"].items():
                if binary:
                    rows.append([arm, seg, v["n_treated"], v["n_control"], _num(v["rate_treated"], True).lstrip("+"),
                                 _num(v["rate_control"], True).lstrip("+"), _num(v["absolute"], True),
                                 _interval(v["absolute_ci"], True), f"{v.get('p_value', float('nan')):.3g}"])  # fmt: skip
                else:
                    rows.append([arm, seg, v["n_treated"], v["n_control"], _num(v["mean_treated"], False),
                                 _num(v["mean_control"], False), _num(v["difference"], False),
                                 _interval(v["difference_ci"], False),
                                 "—" if v["p_value"] is None else f"{v['p_value']:.3g}"])  # fmt: skip
        head = "rate" if binary else "mean"
        out.append(table(["arm", "segment", "treated", "control", f"treated {head}", f"control {head}",
                          "difference", "95% CI", "p"], rows))  # fmt: skip
        for arm, a in e["arms"].items():
            up = a.get("uplift")
            if not up:
                continue
            if "skipped" in up:
                out.append(
                    f"<p class='note'>{h.escape(arm)}: uplift not fitted: {h.escape(up['skipped'])}</p>"
                )
                continue
            at = ", ".join(f"@{k}: {_num(v, True)}" for k, v in up["uplift_at_k"].items())
            out.append(
                f"<p>{h.escape(arm)} uplift ({h.escape(up['method'])}): Qini coefficient "
                f"{up['qini_coefficient']:.4f}, AUUC {up['uplift_auc']:.4f} (normalised as scikit-uplift), "
                f"uplift {at}; <b>{h.escape(str(up['verdict']))}</b>.</p>"
            )
    out.append("</body></html>")
    return "\n".join(out)


def write_summary(workspace: Workspace, summary: dict[str, Any], out: Path | None = None) -> dict[str, Path]:
    """HTML and JSON of an imported experiment's report (``out``'s stem, or ``.propensity/reports/``)."""
    data = {k: v for k, v in summary.items() if not k.startswith("_")}
    stem = (out.with_suffix("") if out is not None
            else workspace.state_dir / "reports" / f"experiment-{summary['experiment']}")  # fmt: skip
    paths = {"html": stem.with_suffix(".html"), "json": stem.with_suffix(".json")}
    paths["html"].parent.mkdir(parents=True, exist_ok=True)
    paths["html"].write_text(render_summary_html(summary), encoding="utf-8")
    paths["json"].write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return paths
