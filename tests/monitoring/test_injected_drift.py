"""Acceptance: on data with injected drift each targeted monitor fires and the unaffected ones stay quiet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from tests.monitoring.drift_project import END, FEATURES, SOURCES, build_drift_workspace

from propensity.monitoring.runner import run_monitors
from propensity.monitoring.store import MonitorRun

AMOUNT_FEATURES = {"spend_30d", "avg_order_30d"}
# A web stream normally has an event every few minutes: silent for 2 hours is worth a look, 6 is an outage.
WEB_SILENCE = {"thresholds": {"freshness_silence:web": {"warning": 2, "alert": 6}}}


def _run(root: Path, **kw: Any) -> MonitorRun:
    ws = build_drift_workspace(root, **kw)
    return run_monitors(ws, as_of=END, send_alerts=False)


def _firing(run: MonitorRun) -> set[tuple[str, str]]:
    return {(r.name, r.subject) for r in run.firing("warning")}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> MonitorRun:
    return _run(tmp_path_factory.mktemp("clean"), alerts=WEB_SILENCE)


def test_stationary_data_raises_nothing(clean: MonitorRun) -> None:
    assert clean.status == "ok", [r for r in clean.results if r.status != "ok"]
    names = {r.name for r in clean.results}
    assert {"feature_psi", "feature_ks", "null_rate", "zero_rate", "freshness_silence", "freshness_lag",
            "volume"} <= names  # fmt: skip
    assert {r.subject for r in clean.results if r.name == "feature_psi"} == {f["name"] for f in FEATURES}
    assert {r.subject for r in clean.results if r.name == "volume"} == set(SOURCES)


def test_shifted_feature_fires_its_drift_monitors_only(tmp_path: Path) -> None:
    run = _run(tmp_path, shift_amounts=True, alerts=WEB_SILENCE)
    assert run.result("feature_psi", "avg_order_30d").status == "alert"  # type: ignore[union-attr]
    assert run.result("feature_psi", "spend_30d").status == "alert"  # type: ignore[union-attr]
    assert run.result("feature_ks", "avg_order_30d").status == "alert"  # type: ignore[union-attr]
    unaffected = {(n, s) for n, s in _firing(run) if s not in AMOUNT_FEATURES}
    assert unaffected == set()
    assert all(r.status == "ok" for r in run.results if r.name in ("null_rate", "zero_rate"))


def test_broken_source_fires_its_freshness_and_volume_only(tmp_path: Path) -> None:
    run = _run(tmp_path, broken_source=True, alerts=WEB_SILENCE)
    assert run.result("freshness_silence", "crm").status == "alert"  # type: ignore[union-attr]
    assert run.result("volume", "crm").status == "alert"  # type: ignore[union-attr]
    assert run.result("volume", "crm").details["direction"] == "drop"  # type: ignore[union-attr]
    other = {(n, s) for n, s in _firing(run) if s != "crm" and s != "sends_30d"}
    assert other == set()
    for source in ("web", "shop"):
        assert run.result("freshness_silence", source).status == "ok"  # type: ignore[union-attr]
        assert run.result("volume", source).status == "ok"  # type: ignore[union-attr]


def test_stale_stream_fires_freshness_of_that_source_only(tmp_path: Path) -> None:
    run = _run(tmp_path, stale_hours=12, alerts=WEB_SILENCE)
    silence = run.result("freshness_silence", "web")
    assert silence is not None and silence.status == "alert" and silence.value > 11.5
    assert {s for _, s in _firing(run)} <= {"web"}, _firing(run)
    assert all(r.status == "ok" for r in run.results if r.name.startswith("feature_"))


def test_a_field_a_source_stops_filling_fires_null_and_zero_rates(tmp_path: Path) -> None:
    run = _run(tmp_path, null_amounts=True, alerts=WEB_SILENCE)
    assert run.result("null_rate", "avg_order_30d").status != "ok"  # type: ignore[union-attr]
    assert run.result("zero_rate", "spend_30d").status != "ok"  # type: ignore[union-attr]
    assert {s for _, s in _firing(run)} <= AMOUNT_FEATURES, _firing(
        run
    )  # the shop still sends: sources quiet


def test_a_lagging_pipeline_fires_the_lag_monitor_not_silence(tmp_path: Path) -> None:
    run = _run(tmp_path, late_hours=30, alerts=WEB_SILENCE)
    lag = run.result("freshness_lag", "web")
    assert lag is not None and lag.status == "alert" and lag.value > 29
    assert run.result("freshness_silence", "web").status == "ok"  # type: ignore[union-attr]
    assert _firing(run) == {("freshness_lag", "web")}


def test_a_declared_source_that_never_sent_is_an_alert(tmp_path: Path) -> None:
    ws = build_drift_workspace(tmp_path, customers=60)
    spec = (tmp_path / "propensity.yaml").read_text()
    spec = spec.replace(
        "sources:\n", "sources:\n- name: app\n  path: data/app/*.parquet\n  format: parquet\n", 1
    )
    (tmp_path / "propensity.yaml").write_text(spec)
    run = run_monitors(type(ws).open(tmp_path), as_of=END, send_alerts=False, store=False)
    assert run.result("freshness_silence", "app").status == "alert"  # type: ignore[union-attr]
