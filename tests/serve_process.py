"""`propensity serve` as a real child process for tests: start it, wait until it is ready, call it over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.services import free_port

from propensity.workspace import Workspace


def call(url: str, body: Any = None) -> tuple[int, Any]:
    """GET (or POST ``body`` as JSON) and return the status and the decoded JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    """Poll /readyz (the process loads the online store and compiles the model first)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if call(f"{base}/readyz")[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            out = proc.stdout.read().decode() if proc.stdout and proc.poll() is not None else ""
            raise AssertionError(f"{base} did not become ready:\n{out}")
        time.sleep(0.1)


@contextmanager
def serve_process(
    ws: Workspace, *args: str, wait: bool = True
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A `propensity serve -w ws *args` on a free port; yields its base URL and process (ready unless
    ``wait=False``), and stops it at the end."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "propensity", "serve", "-w", str(ws.root), "--port", str(port), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        if wait:
            wait_ready(base, proc)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=20)
        if proc.stdout:
            proc.stdout.close()


def same_scores(a: dict[str, Any], b: dict[str, Any], tol: float = 1e-9) -> bool:
    """Two predictions' ``scores`` agree: every field equal, probabilities up to ``tol``. (A linear model's
    recency terms are continuous, so the milliseconds between two calls move a score by ~1e-12.)"""
    if a.keys() != b.keys():
        return False
    for name, x in a.items():
        y = b[name]
        if {k: v for k, v in x.items() if k != "probability"} != {
            k: v for k, v in y.items() if k != "probability"
        }:
            return False
        px, py = x.get("probability"), y.get("probability")
        if (px is None) != (py is None) or (px is not None and abs(px - py) > tol):
            return False
    return True
