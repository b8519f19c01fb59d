"""Validation gates: checks a scoring run must pass before anything of it is published.

Schema, value ranges, null rates, the row count against the previous run, a collapsed score distribution,
each action's score PSI against the previous run, and the data's freshness (a run scored as of more than the
freshness threshold after the newest event it saw describes a silence, not customers). Any failing check blocks the run: no destination receives
anything, and the report (stored as JSON next to the run's other activation state, and printed) says which check
failed, with its value and threshold. ``propensity activate --force --reason TEXT`` publishes anyway and records
who overrode what, and why, in the report and in ``overrides.jsonl``.

>>> from propensity.config.destinations import GateSettings
>>> report = run_gates(rows_for_doctest(), None, GateSettings(), run_id="r1")
>>> report.blocked, [c.name for c in report.checks][:3]
(False, ['schema', 'ranges', 'null_rate'])
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from propensity.config.destinations import GateSettings
from propensity.core.clock import fmt_age, fmt_threshold
from propensity.core.score_row import SCORE_ROW_SCHEMA
from propensity.core.stats import psi

_PLATEAU_MARGIN = 0.25  # how much more of a run than of the test split may share the model's commonest value


@dataclass(frozen=True)
class GateCheck:
    """One check's outcome. ``value`` and ``threshold`` are numbers where the check is a comparison."""

    name: str
    passed: bool
    value: float | None
    threshold: float | None
    message: str
    action: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "action": self.action,
            "passed": self.passed,
            "value": self.value,
            "threshold": self.threshold,
            "message": self.message,
        }


@dataclass
class GateReport:
    run_id: str
    previous_run_id: str | None
    checks: list[GateCheck]
    checked_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    forced_reason: str | None = None
    forced_by: str | None = None

    @property
    def failed(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def blocked(self) -> bool:
        """True when a check failed and nobody forced the run through."""
        return bool(self.failed) and self.forced_reason is None

    def force(self, reason: str) -> None:
        if not reason.strip():
            raise ValueError("an override needs a reason")
        self.forced_reason = reason.strip()
        try:
            self.forced_by = getpass.getuser()
        except (KeyError, OSError):
            self.forced_by = None

    def summary(self) -> str:
        if self.passed:
            return f"run {self.run_id}: all {len(self.checks)} gate checks passed"
        names = ", ".join(f"{c.name}{f'[{c.action}]' if c.action else ''}" for c in self.failed)
        if self.forced_reason is not None:
            return f"run {self.run_id}: failed {names}; published anyway (forced: {self.forced_reason})"
        return (
            f"run {self.run_id} is blocked: failed {names}; nothing was published "
            "(fix the run, or override with --force --reason TEXT)"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "previous_run_id": self.previous_run_id,
            "checked_at": self.checked_at.isoformat(),
            "passed": self.passed,
            "blocked": self.blocked,
            "forced": None
            if self.forced_reason is None
            else {"reason": self.forced_reason, "by": self.forced_by},
            "checks": [c.to_json() for c in self.checks],
        }

    def save(self, folder: Path) -> Path:
        """Write the report to ``<folder>/<run_id>.json`` (the latest check of the run); log an override."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.run_id}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
        if self.forced_reason is not None and self.failed:
            entry = {"run_id": self.run_id, "at": self.checked_at.isoformat(), "by": self.forced_by,
                     "reason": self.forced_reason, "failed": [c.to_json() for c in self.failed]}  # fmt: skip
            with (folder / "overrides.jsonl").open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")
        return path


def run_gates(
    rows: pa.Table,
    previous: pa.Table | None,
    settings: GateSettings,
    *,
    run_id: str,
    previous_run_id: str | None = None,
    expected_top_share: Mapping[str, float] | None = None,
) -> GateReport:
    """Every check of ``rows`` (and against ``previous``, the last published run's rows, when there is one).
    ``expected_top_share``: per action, the share of the model's test scores held by its most common value
    (:func:`reference_top_share`), so that a calibrator's plateau is not taken for a collapse."""
    checks = [check_schema(rows)]
    if not checks[0].passed:  # nothing else can be read reliably
        return GateReport(run_id, previous_run_id, checks)
    checks += [check_ranges(rows), check_null_rate(rows, settings)]
    checks.append(check_row_count(rows, previous, settings))
    for action in sorted(set(rows.column("action").to_pylist())):
        current = _eligible_scores(rows, action)
        # Rule-based fallback scores are a handful of tiers by design: only model scores can collapse.
        expected = (expected_top_share or {}).get(action, 0.0)
        checks.append(
            check_collapse(
                _eligible_scores(rows, action, model_only=True), settings, action, expected_top_share=expected
            )
        )
        reference = _eligible_scores(previous, action) if previous is not None else None
        checks.append(check_psi(current, reference, settings, action))
    return GateReport(run_id, previous_run_id, checks)


def check_freshness(as_of: datetime, newest_event: datetime | None, threshold: timedelta) -> GateCheck:
    """A run scored as of more than the freshness threshold after the newest event it could see is about a
    silence, not about customers (every recency feature has aged, every window count has drained): blocked."""
    limit_h = threshold.total_seconds() / 3600.0
    if (
        newest_event is None
    ):  # rows scored elsewhere, or a workspace without an event log: nothing to judge by
        return GateCheck(
            "freshness", True, None, limit_h, "no event in this workspace's log to judge freshness by"
        )
    age = as_of - newest_event
    hours = age.total_seconds() / 3600.0
    newest = f"{newest_event.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    if age <= threshold:
        return GateCheck(
            "freshness", True, hours, limit_h,
            f"scored {fmt_age(age)} after the newest event ({newest}); threshold {fmt_threshold(threshold)}",
        )  # fmt: skip
    return GateCheck(
        "freshness", False, hours, limit_h,
        f"scored as of {as_of.astimezone(UTC):%Y-%m-%d %H:%M} UTC, {fmt_age(age)} after the newest event "
        f"({newest}), more than the freshness threshold of {fmt_threshold(threshold)}: the scores describe a "
        "silence in the data; ingest the missing events and score again, or score as of the data's end "
        "(`propensity score --as-of`, or `clock: data` in propensity.yaml)",
    )  # fmt: skip


def check_schema(rows: pa.Table) -> GateCheck:
    problems = []
    for f in SCORE_ROW_SCHEMA:
        if f.name not in rows.schema.names:
            problems.append(f"missing column {f.name}")
        elif not rows.schema.field(f.name).type.equals(f.type):
            problems.append(f"{f.name} is {rows.schema.field(f.name).type}, expected {f.type}")
        elif not f.nullable and rows.column(f.name).null_count:
            problems.append(f"{f.name} has {rows.column(f.name).null_count} null(s) and must have none")
    extra = [n for n in rows.schema.names if n not in SCORE_ROW_SCHEMA.names]
    problems += [f"unexpected column {n}" for n in extra]
    message = "columns and types match the score row contract" if not problems else "; ".join(problems)
    return GateCheck("schema", not problems, float(len(problems)), 0.0, message)


def check_ranges(rows: pa.Table) -> GateCheck:
    score, pct = rows.column("score"), rows.column("percentile")
    bad_score = _count(pc.or_(pc.less(score, 0.0), pc.greater(score, 1.0)))
    bad_score += _count(pc.is_nan(score)) if pa.types.is_floating(score.type) else 0
    bad_pct = _count(pc.or_(pc.less(pct, 0.0), pc.greater(pct, 100.0)))
    bad_time = _count(pc.less_equal(rows.column("expiration_at"), rows.column("scored_at")))
    problems = []
    if bad_score:
        problems.append(f"{bad_score} score(s) outside [0, 1]")
    if bad_pct:
        problems.append(f"{bad_pct} percentile(s) outside [0, 100]")
    if bad_time:
        problems.append(f"{bad_time} row(s) expire at or before they were scored")
    total = bad_score + bad_pct + bad_time
    message = "scores, percentiles and expiry times are in range" if not problems else "; ".join(problems)
    return GateCheck("ranges", total == 0, float(total), 0.0, message)


def check_null_rate(rows: pa.Table, settings: GateSettings) -> GateCheck:
    eligible = rows.filter(pc.fill_null(rows.column("eligible"), False))
    n = eligible.num_rows
    if n == 0:
        return GateCheck(
            "null_rate", False, None, settings.max_null_rate, "no eligible rows: nothing to publish"
        )
    # A percentile may be null (a bundle without score quantiles, a fallback score); a score and segment not.
    missing = pc.or_(
        pc.is_null(eligible.column("score"), nan_is_null=True), pc.is_null(eligible.column("segment"))
    )
    rate = _count(missing) / n
    ok = rate <= settings.max_null_rate
    message = (
        f"{rate:.2%} of {n:,} eligible rows lack a score or segment "
        f"({'within' if ok else 'above'} the allowed {settings.max_null_rate:.2%})"
    )
    return GateCheck("null_rate", ok, rate, settings.max_null_rate, message)


def check_row_count(rows: pa.Table, previous: pa.Table | None, settings: GateSettings) -> GateCheck:
    limit = settings.max_row_count_change
    if previous is None or previous.num_rows == 0:
        return GateCheck(
            "row_count", True, None, limit, f"{rows.num_rows:,} rows; no previous run to compare"
        )
    change = rows.num_rows / previous.num_rows - 1.0
    ok = abs(change) <= limit
    message = (
        f"{rows.num_rows:,} rows against {previous.num_rows:,} in the previous run ({change:+.1%}; "
        f"allowed ±{limit:.0%})"
    )
    return GateCheck("row_count", ok, change, limit, message)


def reference_top_share(quantiles: Sequence[float] | None) -> float:
    """The share of the model's own test scores held by its most common value, read off the bundle's
    calibrated test-score quantiles (an isotonic calibrator maps whole ranges to one value: a plateau of 55% of
    the test scores shows as about 55 of the 101 quantiles being equal). 0 when unknown."""
    if not quantiles:
        return 0.0
    _, counts = np.unique(np.round(np.asarray(quantiles, dtype=np.float64), 6), return_counts=True)
    return float(counts.max() / len(quantiles))


def check_collapse(
    scores: np.ndarray, settings: GateSettings, action: str, *, expected_top_share: float = 0.0
) -> GateCheck:
    if scores.size < settings.min_rows_for_distribution:
        return GateCheck("collapse", True, None, settings.min_score_std, f"{scores.size} eligible rows: too few to judge", action)  # fmt: skip
    std = float(np.std(scores))
    _, counts = np.unique(np.round(scores, 6), return_counts=True)
    top_share = float(counts.max() / scores.size)
    # A value the model itself gives to many customers (an isotonic plateau, seen on its test split) is not a
    # collapse; more of the run piling onto one value than that (plus a margin) is.
    allowed = max(settings.max_top_value_share, min(1.0, expected_top_share + _PLATEAU_MARGIN))
    ok = std >= settings.min_score_std and top_share <= allowed
    if ok:
        message = f"scores spread normally (std {std:.4f}, most common value {top_share:.1%} of rows)"
    elif std < settings.min_score_std:
        message = f"scores collapsed: std {std:.6f} is below {settings.min_score_std} (nearly all the same)"
    else:
        message = f"scores collapsed: one value holds {top_share:.1%} of rows (allowed {allowed:.0%})"
    return GateCheck("collapse", ok, std, settings.min_score_std, message, action)


def check_psi(
    current: np.ndarray, reference: np.ndarray | None, settings: GateSettings, action: str
) -> GateCheck:
    limit = settings.max_psi
    if reference is None or reference.size < settings.min_rows_for_distribution:
        return GateCheck("psi", True, None, limit, "no previous run with enough rows to compare", action)
    if current.size < settings.min_rows_for_distribution:
        return GateCheck("psi", True, None, limit, f"{current.size} eligible rows: too few to judge", action)
    value = psi(reference, current)
    ok = value <= limit
    message = f"score PSI against the previous run {value:.3f} ({'within' if ok else 'above'} {limit})"
    return GateCheck("psi", ok, value, limit, message, action)


def _eligible_scores(rows: pa.Table, action: str, *, model_only: bool = False) -> np.ndarray:
    mask = pc.and_(pc.equal(rows.column("action"), action), pc.fill_null(rows.column("eligible"), False))
    if model_only:
        mask = pc.and_(mask, pc.invert(pc.fill_null(rows.column("fallback"), False)))
    scores = rows.filter(pc.fill_null(mask, False)).column("score")
    values = scores.drop_null().to_numpy(zero_copy_only=False).astype(np.float64)
    return values[np.isfinite(values)]


def _count(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.sum(pc.fill_null(mask, False)).as_py() or 0)


def rows_for_doctest() -> pa.Table:
    """A tiny valid run (used by this module's example)."""
    n = 4
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = datetime(2026, 1, 2, tzinfo=UTC)
    data: dict[str, list[Any]] = {
        "customer_id": [f"c{i}" for i in range(n)], "action": ["buy"] * n, "score": [0.1, 0.4, 0.6, 0.9],
        "percentile": [10.0, 40.0, 60.0, 90.0], "segment": ["low", "medium", "medium", "high"],
        "eligible": [True] * n, "next_best_action": ["buy"] * n, "reason_codes": [None] * n,
        "holdout_group": [None] * n, "model_id": ["m"] * n, "model_version": ["v"] * n,
        "feature_set_version": ["f"] * n, "scoring_run_id": ["r1"] * n, "scored_at": [now] * n,
        "expiration_at": [later] * n, "decision_policy": [None] * n, "consent": [None] * n, "fallback": [False] * n,
        "as_of": [now] * n, "trigger_id": [None] * n,
    }  # fmt: skip
    return pa.table(data, schema=SCORE_ROW_SCHEMA)


def render(report: GateReport, console: Any, *, verbose: bool = False) -> None:
    """Print the report's one-line verdict, after a table of every check when one failed (or ``verbose``)."""
    from rich.markup import escape
    from rich.table import Table

    if report.passed and not verbose:
        console.print(f"[green]{escape(report.summary())}[/]")
        return

    table = Table(title=f"gates for run {report.run_id}")
    for col in ("check", "action", "result", "value", "threshold", "why"):
        table.add_column(col)
    for c in report.checks:
        value = "—" if c.value is None else f"{c.value:.4g}"
        threshold = "—" if c.threshold is None else f"{c.threshold:.4g}"
        result = "[green]pass[/]" if c.passed else "[bold red]FAIL[/]"
        table.add_row(c.name, c.action or "", result, value, threshold, escape(c.message))
    console.print(table)
    colour = "green" if report.passed else ("yellow" if not report.blocked else "bold red")
    console.print(f"[{colour}]{escape(report.summary())}[/]")
