"""`propensity quickstart` end to end, as `make quickstart` runs it (smaller data): it trains, promotes and serves,
prints its curl only once the server answers it (the curl works on the first try), and stops on Ctrl-C within a
few seconds, saying so."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.services import free_port


@pytest.mark.slow
def test_quickstart_trains_promotes_and_serves(tmp_path: Path) -> None:
    port = free_port()
    ws = tmp_path / "qs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "propensity", "quickstart", "-w", str(ws), "--customers", "1500", "--days", "150",
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    assert proc.stdout is not None
    seen: list[str] = []
    url = None
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            found = re.search(r"curl '(http://127\.0\.0\.1:\d+/v1/predict[^']*)'", line)
            if found:
                url = found.group(1)
                break
        assert url is not None, "no curl printed:\n" + "".join(seen)
        # The first try, the moment it is printed: no retry, no wait.
        answer = httpx.get(url, timeout=10)
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
            rest, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
        took = time.monotonic() - stopping
    out = "".join(seen) + rest
    assert "quickstart finished" in out and "promoted" in out
    assert (
        "loading the online store" in out or "online store (in memory)" in out
    )  # start-up says what it does
    assert "server stopped" in rest and took < 10, f"took {took:.1f}s to stop:\n{rest}"
