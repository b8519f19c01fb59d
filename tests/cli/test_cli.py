"""The `propensity` command as a user meets it: help, exit codes, errors without tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import canonical_events, write_parquet

CLI = [sys.executable, "-m", "propensity"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"COLUMNS": "200", **__import__("os").environ},
    )


def test_help_lists_the_commands() -> None:
    out = run("--help")
    assert out.returncode == 0
    for command in ("quickstart", "init", "ingest", "events", "datasets"):
        assert command in out.stdout


def test_every_command_has_help() -> None:
    for args in (["init"], ["ingest"], ["events", "summary"], ["events", "quarantine"], ["datasets", "synthetic"],
                 ["datasets", "completejourney"], ["quickstart"]):  # fmt: skip
        out = run(*args, "--help")
        assert out.returncode == 0 and "Usage" in out.stdout, args


def test_bad_spec_is_a_clear_error_with_exit_code_1(tmp_path: Path) -> None:
    (tmp_path / "propensity.yaml").write_text(
        "sources:\n  - name: web\n    path: x.csv\n    delay: 2 hours\n", encoding="utf-8"
    )
    out = run("ingest", "-w", str(tmp_path))
    assert out.returncode == 1
    assert "sources[0].delay: '2 hours' is not a duration" in out.stderr
    assert "Traceback" not in out.stderr


def test_usage_error_exits_2() -> None:
    assert run("ingest", "--no-such-option").returncode == 2


def test_init_then_ingest_with_strict(tmp_path: Path) -> None:
    assert run("init", str(tmp_path)).returncode == 0
    assert (tmp_path / "propensity.yaml").exists()
    assert run("init", str(tmp_path)).returncode == 1  # refuses to overwrite
    good = write_parquet(canonical_events(50), tmp_path / "good.parquet")
    bad = tmp_path / "bad.csv"
    bad.write_text("customer_id,event_type,event_time\nc1,page_view,not-a-time\n", encoding="utf-8")
    ws = tmp_path / "ws"
    ws.mkdir()
    ok = run("ingest", str(good), str(bad), "-w", str(ws))
    assert ok.returncode == 0
    assert (
        "50 accepted" in ok.stdout
        and "1 quarantined" in ok.stdout
        and "event_time: not a timestamp" in ok.stdout
    )
    bad2 = tmp_path / "bad2.csv"
    bad2.write_text("customer_id,event_type,event_time\n,page_view,2024-01-01\n", encoding="utf-8")
    assert run("ingest", str(bad2), "-w", str(ws), "--strict").returncode == 1
    quarantine = run("events", "quarantine", "-w", str(ws))
    assert "not-a-time" in quarantine.stdout
