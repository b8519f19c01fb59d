"""`propensity quickstart` end to end, as `make quickstart` runs it (smaller data): it trains, promotes and serves."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_quickstart_trains_promotes_and_serves(tmp_path: Path) -> None:
    port = _free_port()
    ws = tmp_path / "qs"
    proc = subprocess.Popen(
        [sys.executable, "-m", "propensity", "quickstart", "-w", str(ws), "--customers", "1500", "--days", "150",
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                ready = False
            if ready:
                break
            time.sleep(0.5)
        assert ready, proc.stdout.read() if proc.poll() is not None and proc.stdout else "server never ready"
        body = httpx.get(
            f"http://127.0.0.1:{port}/v1/predict", params={"customer_id": "c42"}, timeout=5
        ).json()
        assert "buy_7d" in body["scores"] and body["model_version"].startswith("m-")
        assert all(
            0.0 < s["probability"] < 1.0 for s in body["scores"].values() if s["probability"] is not None
        )
        assert (ws / ".propensity" / "reports" / "report.html").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert "quickstart finished" in out and "curl 'http://127.0.0.1:" in out and "promoted" in out
