"""A small console workspace (the server tests' trained workspace, copied, with an experiment, a file drop, a
second bundle, two scoring runs and a monitor run) and a headless Chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from tests.serve_process import wait_ready
from tests.services import free_port

from propensity.workspace import Workspace

ADMIN, VIEWER, LOOKUP = "adm-4f1c9e", "view-77ab03", "look-c0ffee"
KEYS = f"ana:admin+console+customers+identifiers:{ADMIN},vic:console:{VIEWER},lou:console+customers:{LOOKUP}"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
OUTPUT = Path(os.environ.get("PROPENSITY_TEST_OUTPUT", Path(__file__).resolve().parents[2] / "test-output"))


def chromium() -> str:
    """Debian's chromium (``make test`` installs it); Playwright's own browser download is not used."""
    for name in ("chromium", "chromium-headless-shell", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("no chromium on PATH: `make browser` installs Debian's chromium (apt)")


def build_console_workspace(shared: Workspace, root: Path) -> tuple[Workspace, str, str]:
    """Copy ``shared`` into ``root``; add an experiment and a file destination; score as of 40 days before the
    data's end (matured) and as of its end; train a second (candidate) bundle; run the monitors once."""
    from propensity.events.log import open_event_log
    from propensity.experiments.report import experiment_report, load_score_rows, write_report
    from propensity.monitoring.runner import run_monitors
    from propensity.registry.registry import Registry
    from propensity.registry.train import train_project
    from propensity.scoring.batch import score_and_store

    shutil.copytree(shared.root, root, ignore=shutil.ignore_patterns("write.lock", "exports", "console"))
    spec = yaml.safe_load((root / "propensity.yaml").read_text())
    spec["experiments"] = {"holdouts": [{"name": "q4", "control_share": 0.2}]}
    spec["destinations"] = [{"name": "campaign", "type": "file", "format": "csv", "path": "exports"}]
    spec["policies"] = {"actions": {"buy_7d": {"value": 30.0, "cost": 1.0}}}
    spec["training"] = {"seed": 11}  # the second bundle differs from the first by its seed
    (root / "propensity.yaml").write_text(
        "# The console tests' project (a comment the console must keep when it saves a target).\n"
        + yaml.safe_dump(spec, sort_keys=False)
    )
    ws = Workspace.open(root)
    production = Registry(ws).production()
    assert production is not None
    with open_event_log(ws).connection(read_only=True) as con:
        end = con.execute("SELECT max(event_time) FROM events").fetchall()[0][0]
    matured = score_and_store(ws, as_of=end - timedelta(days=40)).run.run_id
    score_and_store(ws, as_of=end)
    run_monitors(ws, as_of=end - timedelta(days=7))
    run_monitors(ws, as_of=end)
    # The stored experiment report (with uplift curves) of the matured run, as `propensity experiments report`.
    _, rows = load_score_rows(ws, matured)
    write_report(ws, experiment_report(ws, rows, run_id=matured))
    candidate = train_project(ws, actions=["buy_7d"], write_report=False).bundle_id
    assert candidate != production
    return ws, production, candidate


def serve(ws: Workspace) -> Iterator[str]:
    """``propensity serve`` (console included) on a free port with the test keys; yields its base URL."""
    port = free_port()
    env = {**os.environ, "PROPENSITY_API_KEYS": KEYS, "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "propensity", "serve", "-w", str(ws.root), "--port", str(port), "--no-monitor"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stdout:
            proc.stdout.close()


def browser() -> Iterator[object]:
    """One headless Chromium for the module, with a fresh profile."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="console-chromium-")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=chromium(), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )  # fmt: skip
        try:
            yield context
        finally:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)
