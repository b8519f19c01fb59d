"""`propensity quickstart` end to end, as `make quickstart` runs it (smaller data): it trains, promotes and serves,
prints its curl only once the server answers it (the curl works on the first try), and stops on Ctrl-C within a
few seconds, saying so.

The test waits for quickstart's own signal, the curl line (printed once the server has answered that request),
not for a fixed time: a loaded machine makes it wait longer, never fail (tests/process_output.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.process_output import CEILING_S, Output
from tests.services import free_port


@pytest.mark.slow
@pytest.mark.timeout(CEILING_S + 120)
def test_quickstart_trains_promotes_and_serves(tmp_path: Path) -> None:
    port = free_port()
    ws = tmp_path / "qs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "propensity", "quickstart", "-w", str(ws), "--customers", "1500", "--days", "150",
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    out = Output(proc)
    try:
        url = out.wait_for(r"curl '(http://127\.0\.0\.1:\d+/v1/predict[^']*)'").group(1)
        # The first try, the moment it is printed: no retry, no wait.
        answer = httpx.get(url, timeout=60)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert "buy_7d" in body["scores"] and body["model_version"].startswith("m-")
        assert all(
            0.0 < s["probability"] < 1.0 for s in body["scores"].values() if s["probability"] is not None
        )
        assert (ws / ".propensity" / "reports" / "report.html").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        stopping = time.monotonic()
        try:
            rest = out.rest(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest = out.rest(timeout=30)
        took = time.monotonic() - stopping
    text = out.text
    assert "quickstart finished" in text and "promoted" in text
    assert (
        "loading the online store" in text or "online store (in memory)" in text
    )  # start-up says what it does
    assert "server stopped" in rest and took < 10, f"took {took:.1f}s to stop:\n{rest}"
