"""The Dockerfile and compose.yaml, checked without a Docker engine (CI has none): the compose
file parses and refers to real files and real commands, the image's entrypoint command serves a workspace from a
virtual environment (with the compose file's Redis store, a real redis-server), its health check passes, and the
setup step's edit of the example project gives a valid PostgreSQL score store. Where a Docker engine answers,
`docker compose up` is built and smoke-tested for real (skipped, saying why, elsewhere)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from tests.process_output import Output
from tests.services import RedisServer, free_port

from propensity.config.spec import parse_spec
from propensity.datasets.examples import example_spec_text

ROOT = Path(__file__).resolve().parents[1]
PROPENSITY = str(Path(sys.executable).parent / "propensity")


def _compose() -> dict:  # type: ignore[type-arg]
    data = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _dockerfile() -> dict[str, list[str]]:
    """The Dockerfile's instructions (continuation lines joined), keyed by instruction."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n", " ", text)
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.setdefault(word.upper(), []).append(rest.strip())
    return out


def _accepts(args: list[str]) -> None:
    """``propensity ARGS`` parses (unknown commands and options fail; values are not checked)."""
    done = subprocess.run([PROPENSITY, *args, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"`propensity {shlex.join(args)}` is refused: {done.stdout}{done.stderr}"


def test_compose_file_refers_to_real_files_and_commands() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"postgres", "redis", "setup", "server"} <= set(services)
    for name in ("setup", "server"):
        build = services[name]["build"]
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        assert (context / "Dockerfile").exists(), f"{name} builds from {context}, which has no Dockerfile"
    for name in ("postgres", "redis"):
        assert re.match(r"^[a-z0-9./-]+:\d+[\w.-]*$", services[name]["image"]), (
            "images are pinned to a version"
        )
    _accepts(services["server"]["command"])
    script = services["setup"]["command"][0]
    lines = [line.strip() for line in script.splitlines() if line.strip().startswith("propensity ")]
    assert lines, "the setup step runs propensity commands"
    for line in lines:
        _accepts(shlex.split(line)[1:])
    volumes = set(compose["volumes"])
    for svc in services.values():
        for v in svc.get("volumes", []):
            assert v.split(":")[0] in volumes, f"volume {v} is not declared"
        for dep in svc.get("depends_on", {}):
            assert dep in services


def test_setup_turns_the_example_score_store_into_postgres(tmp_path: Path) -> None:
    script = _compose()["services"]["setup"]["command"][0]
    sed = next(line.strip() for line in script.splitlines() if line.strip().startswith("sed "))
    spec = tmp_path / "propensity.yaml"
    spec.write_text(example_spec_text("synthetic"), encoding="utf-8")
    subprocess.run(shlex.split(sed.replace("/workspace/propensity.yaml", str(spec))), check=True)
    parsed = parse_spec(yaml.safe_load(spec.read_text(encoding="utf-8")))
    assert parsed.scoring.store == "postgres" and parsed.scoring.url == (
        "postgresql://propensity@postgres:5432/propensity"
    )


def test_dockerfile_copies_what_exists() -> None:
    instructions = _dockerfile()
    for copy in instructions["COPY"]:
        if copy.startswith("--from"):
            continue
        *sources, _dest = copy.split()
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: no such file in the repository"
    assert json.loads(instructions["ENTRYPOINT"][0]) == ["propensity"]


@pytest.mark.service
def test_the_image_command_serves_and_passes_its_health_check(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    instructions = _dockerfile()
    command = json.loads(instructions["ENTRYPOINT"][0]) + json.loads(instructions["CMD"][0])
    compose_store = _compose()["services"]["server"]["command"]
    store = compose_store[compose_store.index("--store") + 1]
    assert store.startswith("redis://")
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "propensity.yaml").write_text(example_spec_text("blank"), encoding="utf-8")
    port = free_port()
    args = [a.replace("/workspace", str(workspace)).replace("0.0.0.0", "127.0.0.1") for a in command]
    args[args.index("--port") + 1] = str(port)
    args[0] = PROPENSITY
    args += ["--store", redis_server.url]
    proc = subprocess.Popen(args, cwd=workspace, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "160"})  # fmt: skip
    out = Output(proc)
    try:
        out.wait_for(r"serving on http://")  # printed once /healthz answers: the server's own signal
        check = next(h for h in instructions["HEALTHCHECK"])
        health = json.loads(check[check.index("CMD") + 3 :].strip())
        health = [sys.executable if h == "python" else h.replace(":8000/", f":{port}/") for h in health]
        assert subprocess.run(health, timeout=60).returncode == 0
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out.rest(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out.rest(timeout=30)
    assert "serving on http://127.0.0.1" in out.text and "stopped" in out.text, out.text


# ------------------------------------------------------------------------------------------------ with Docker
def _docker_engine() -> str | None:
    """Why the Docker tests cannot run here, or None when a Docker engine answers."""
    if shutil.which("docker") is None:
        return "no docker command"
    done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    if done.returncode != 0:
        return f"no Docker engine answers ({(done.stderr or done.stdout).strip().splitlines()[-1:]})"
    if subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60).returncode != 0:
        return "no `docker compose`"
    return None


@pytest.mark.slow
@pytest.mark.service
@pytest.mark.timeout(3600)
def test_compose_builds_and_serves_with_redis_and_postgres() -> None:
    """Where a Docker engine runs (with network access for the base images and wheels): `docker compose up`
    builds the image, sets up the demo workspace (scores in PostgreSQL), serves it with Redis, and the README's
    curl answers; everything is removed afterwards."""
    why = _docker_engine()
    if why is not None:
        pytest.skip(f"Docker: {why}; the image is checked without an engine by the tests above")
    port = free_port()
    project = f"propensity-test-{port}"
    compose = ["docker", "compose", "-p", project, "-f", str(ROOT / "compose.yaml")]
    env = {**os.environ, "PROPENSITY_PORT": str(port)}
    try:
        up = subprocess.run([*compose, "up", "--build", "--detach", "--wait", "server"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=3000)  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        url = f"http://127.0.0.1:{port}/v1/predict?customer_id=c42&explain=true"
        with urllib.request.urlopen(url, timeout=60) as r:
            body = json.loads(r.read())
        assert r.status == 200 and "buy_7d" in body["scores"], body
        logs = subprocess.run(
            [*compose, "logs", "setup"], env=env, capture_output=True, text=True, timeout=120
        )
        assert "stored run" in logs.stdout, logs.stdout[-3000:]
    finally:
        subprocess.run([*compose, "down", "--volumes", "--rmi", "local"], env=env, capture_output=True,
                       timeout=600)  # fmt: skip
