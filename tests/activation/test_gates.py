"""Validation gates: each check passes a healthy run and blocks the broken one it is there for."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from tests.activation.destinations_fixtures import NOW, canonical_rows

from propensity.activation.gates import GateReport, reference_top_share, render, run_gates
from propensity.config.destinations import GateSettings

N = 400
DEFAULTS = GateSettings()


def _scores(seed: int, shift: float = 0.0, n: int = N) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.beta(2, 5, 2 * n) + shift, 0.0, 1.0)


def _run(seed: int = 0, **kwargs: object) -> pa.Table:
    return canonical_rows(N, scores=_scores(seed), **kwargs)  # type: ignore[arg-type]


def _failed(report: GateReport) -> set[str]:
    return {c.name for c in report.failed}


def test_a_healthy_run_passes_against_a_similar_previous_run() -> None:
    report = run_gates(_run(1), _run(2), DEFAULTS, run_id="r2", previous_run_id="r1")
    assert report.passed and not report.blocked, report.summary()
    assert {c.name for c in report.checks} >= {
        "schema",
        "ranges",
        "null_rate",
        "row_count",
        "collapse",
        "psi",
    }
    assert sum(c.name == "psi" for c in report.checks) == 2  # one per action


def test_the_first_run_has_nothing_to_compare_with_and_passes() -> None:
    report = run_gates(_run(), None, DEFAULTS, run_id="r1")
    assert report.passed
    psi = next(c for c in report.checks if c.name == "psi")
    assert psi.value is None and "no previous run" in psi.message


def test_a_collapsed_run_is_blocked() -> None:
    collapsed = canonical_rows(N, scores=np.full(2 * N, 0.37))
    report = run_gates(collapsed, None, DEFAULTS, run_id="r2")
    assert report.blocked
    assert _failed(report) == {"collapse"}
    assert "collapsed" in next(c for c in report.failed).message


def test_a_run_where_one_value_dominates_is_blocked() -> None:
    scores = _scores(0)
    scores[: int(0.6 * N)] = 0.05  # 60% of buy_7d's rows the same score
    report = run_gates(canonical_rows(N, scores=scores), None, DEFAULTS, run_id="r2")
    failed = report.failed
    assert [(c.name, c.action) for c in failed] == [("collapse", "buy_7d")]
    assert "one value holds 60.0%" in failed[0].message


def test_a_plateau_the_model_has_on_its_test_scores_is_not_a_collapse() -> None:
    # An isotonic calibrator maps a range of raw scores to one value: 45% of the model's own test scores sit on
    # it (the bundle's quantiles show it), so 60% of a run there is normal; with no such reference it is not.
    quantiles = sorted([0.05] * 45 + list(np.linspace(0.06, 0.9, 56)))
    expected = reference_top_share(quantiles)
    assert expected == pytest.approx(45 / 101)
    scores = _scores(0)
    scores[: int(0.6 * N)] = 0.05
    rows = canonical_rows(N, scores=scores)
    assert run_gates(rows, None, DEFAULTS, run_id="r", expected_top_share={"buy_7d": expected}).passed
    assert "collapse" in _failed(run_gates(rows, None, DEFAULTS, run_id="r"))
    # A real collapse (everyone on one value) is still caught, plateau or not.
    flat = canonical_rows(N, scores=np.full(2 * N, 0.05))
    assert "collapse" in _failed(
        run_gates(flat, None, DEFAULTS, run_id="r", expected_top_share={"buy_7d": expected})
    )


def test_a_drifted_run_is_blocked_by_psi() -> None:
    drifted = canonical_rows(N, scores=_scores(3, shift=0.3))
    report = run_gates(drifted, _run(1), DEFAULTS, run_id="r2", previous_run_id="r1")
    assert _failed(report) == {"psi"}
    for check in report.failed:
        assert check.value is not None and check.value > DEFAULTS.max_psi
        assert "above" in check.message


def test_row_count_far_from_the_previous_run_is_blocked() -> None:
    half = canonical_rows(N // 3, scores=_scores(1, n=N // 3))
    report = run_gates(half, _run(2), DEFAULTS, run_id="r2")
    assert "row_count" in _failed(report)
    check = next(c for c in report.failed if c.name == "row_count")
    assert check.value == pytest.approx(1 / 3 - 1, abs=0.01)


def test_null_scores_of_eligible_rows_are_blocked_above_the_rate() -> None:
    rows = _run()
    score = rows.column("score").to_numpy().copy()
    mask = np.zeros(len(score), bool)
    mask[:8] = True
    rows = rows.set_column(2, "score", pa.array(score, mask=mask))
    assert "null_rate" in _failed(run_gates(rows, None, DEFAULTS, run_id="r"))
    lenient = GateSettings(max_null_rate=0.05)
    assert "null_rate" not in _failed(run_gates(rows, None, lenient, run_id="r"))


def test_out_of_range_values_are_blocked() -> None:
    rows = _run()
    score = rows.column("score").to_numpy().copy()
    score[5] = 1.5
    rows = rows.set_column(2, "score", pa.array(score))
    later = pc.subtract(rows.column("scored_at"), pa.scalar(timedelta(days=2)))
    rows = rows.set_column(rows.schema.get_field_index("expiration_at"), "expiration_at", later)
    check = next(c for c in run_gates(rows, None, DEFAULTS, run_id="r").checks if c.name == "ranges")
    assert not check.passed
    assert "1 score(s) outside [0, 1]" in check.message and "expire at or before" in check.message


def test_a_wrong_schema_is_blocked_and_named() -> None:
    rows = _run().drop_columns(["segment"]).append_column("extra", pa.array(["x"] * (2 * N)))
    rows = rows.set_column(0, "customer_id", rows.column("customer_id").cast(pa.large_string()))
    report = run_gates(rows, None, DEFAULTS, run_id="r")
    assert [c.name for c in report.checks] == ["schema"]
    message = report.checks[0].message
    assert "missing column segment" in message and "unexpected column extra" in message
    assert "customer_id is large_string" in message


def test_force_with_a_reason_unblocks_and_is_recorded(tmp_path: Path) -> None:
    report = run_gates(canonical_rows(N, scores=np.full(2 * N, 0.5)), None, DEFAULTS, run_id="r9")
    assert report.blocked
    with pytest.raises(ValueError, match="reason"):
        report.force("  ")
    report.force("known promo week, checked with marketing")
    assert not report.blocked and not report.passed
    path = report.save(tmp_path)
    saved = json.loads(path.read_text())
    assert saved["forced"]["reason"] == "known promo week, checked with marketing"
    assert saved["blocked"] is False and saved["passed"] is False
    overrides = [json.loads(x) for x in (tmp_path / "overrides.jsonl").read_text().splitlines()]
    assert overrides[0]["run_id"] == "r9" and overrides[0]["failed"][0]["name"] == "collapse"


def test_the_console_report_says_why() -> None:
    report = run_gates(canonical_rows(N, scores=np.full(2 * N, 0.5)), None, DEFAULTS, run_id="r9")
    out = StringIO()
    render(report, Console(file=out, width=200))
    text = out.getvalue()
    assert "FAIL" in text and "blocked" in text and "--force --reason" in text


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), shift=st.floats(-0.02, 0.02))
def test_runs_from_the_same_distribution_are_never_blocked(seed: int, shift: float) -> None:
    current = canonical_rows(N, scores=_scores(seed, shift))
    previous = canonical_rows(N, scores=_scores(seed + 1))
    report = run_gates(current, previous, DEFAULTS, run_id="r", previous_run_id="p")
    assert not report.blocked, report.summary()


def test_expired_rows_at_scoring_time_fail_ranges_not_freshness() -> None:
    # A run is checked as written; dropping rows that expire later is the publisher's job (test_activate_cli).
    rows = canonical_rows(10, scored_at=NOW, ttl=timedelta(seconds=1))
    assert run_gates(rows, None, DEFAULTS, run_id="r").passed


def test_fallback_tiers_are_not_a_collapse() -> None:
    tiers = np.resize(np.array([0.05, 0.05, 0.05, 0.2, 0.3]), 2 * N)  # a rule-based fallback: three tiers
    rows = canonical_rows(N, scores=tiers)
    assert "collapse" in _failed(run_gates(rows, None, DEFAULTS, run_id="r"))
    rows = rows.set_column(rows.schema.get_field_index("fallback"), "fallback", pa.array([True] * (2 * N)))
    assert run_gates(rows, None, DEFAULTS, run_id="r").passed
