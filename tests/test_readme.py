"""The README runs word for word: its tour's commands, in order, in a fresh folder, then its Python example; and
every link in the README and docs/ resolves.

A tour line fails the test when it exits non-zero or prints something no tour should (a traceback, an
``error:``, a stale-data warning); the message names the README line, the command and why. ``propensity serve``
is started in the background on a free port (the tour's port is replaced, in the curl line too), the curl line
is sent once the server has said it is serving, and the server must stop within a few seconds of Ctrl-C and say
so. Keep the tour's demo small (its ``--customers``): this test runs it in CI.
"""

from __future__ import annotations

import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.process_output import Output
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
UNEXPECTED = re.compile(
    r"Traceback \(most recent call last\)|^error:|stale data", re.IGNORECASE | re.MULTILINE
)


@dataclass(frozen=True)
class Line:
    number: int  # 1-based line number in README.md
    command: str

    def __str__(self) -> str:
        return f"README.md line {self.number}: `{self.command}`"


def _block(text: str, heading: str, lang: str) -> tuple[int, list[str]]:
    """The first ```lang block after the line that starts with ``heading``: its first line's number and its
    lines."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(heading))
    open_ = next(i for i in range(start, len(lines)) if lines[i].strip() == f"```{lang}")
    close = next(i for i in range(open_ + 1, len(lines)) if lines[i].strip() == "```")
    return open_ + 2, lines[open_ + 1 : close]


def tour() -> list[Line]:
    """The commands of the README's tour, comments and blank lines dropped."""
    first, lines = _block(README.read_text(encoding="utf-8"), "## A short tour", "bash")
    out = []
    for i, raw in enumerate(lines):
        command = _strip_comment(raw).strip()
        if command:
            out.append(Line(first + i, command))
    return out


def _strip_comment(line: str) -> str:
    """The line without a trailing `# comment` (a '#' inside quotes stays)."""
    quote = None
    for i, ch in enumerate(line):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote == ch else ch
        elif ch == "#" and quote is None and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": "160",
            "PYTHONUNBUFFERED": "1"}  # fmt: skip


def _check(line: Line, rc: int, output: str) -> None:
    tail = "\n".join(output.strip().splitlines()[-30:])
    # The README documents `monitor`'s exit 1 on an alert: with its ranked alerts printed, that is an answer.
    answered_with_alerts = (
        line.command.startswith("propensity monitor -w") and "ranked (most telling first)" in output
    )
    assert rc == 0 or (rc == 1 and answered_with_alerts), f"{line} exited with {rc}; its last output:\n{tail}"
    found = UNEXPECTED.search(output)
    assert found is None, f"{line} printed {found.group(0)!r} (unexpected in the tour); its output:\n{tail}"


def _run(line: Line, cwd: Path, timeout: float = 600) -> str:
    done = subprocess.run(["bash", "-c", line.command], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    _check(line, done.returncode, done.stdout + done.stderr)
    return done.stdout


def _serve(line: Line, cwd: Path, port: int) -> subprocess.Popen[str]:
    command = re.sub(r"--port\s+\d+", f"--port {port}", line.command)
    assert command != line.command or "--port" not in line.command, f"{line}: could not set a free port"
    return subprocess.Popen(shlex.split(command), cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip


def _wait_serving(line: Line, proc: subprocess.Popen[str]) -> Output:
    """Read the server's output until it says it is serving (it says so once it answers /healthz): its own
    signal, however long a loaded machine makes it take (tests/process_output.py)."""
    out = Output(proc)
    try:
        out.wait_for(r"serving.*http://")
    except AssertionError as exc:
        proc.kill()
        raise AssertionError(f"{line}: {exc}") from None
    return out


def _stop(line: Line, proc: subprocess.Popen[str], out: Output) -> None:
    proc.send_signal(signal.SIGINT)
    started = time.monotonic()
    try:
        rest = out.rest(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"{line}: Ctrl-C did not stop the server within 15 s") from None
    took = time.monotonic() - started
    assert "stopped" in rest, f"{line}: Ctrl-C stopped the server without saying so:\n{rest}"
    assert took < 10, f"{line}: the server took {took:.1f}s to stop after Ctrl-C"
    _check(line, 0 if proc.returncode in (0, -signal.SIGINT, 130) else proc.returncode, out.text)


def _curl(line: Line, cwd: Path, port: int) -> None:
    command = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{port}", line.command)
    url = re.search(r"'(http[^']+)'|\"(http[^\"]+)\"|(http\S+)", command)
    assert url is not None, f"{line}: no URL found"
    with urllib.request.urlopen(next(g for g in url.groups() if g), timeout=60) as r:  # the first try
        body = r.read().decode()
    assert r.status == 200 and '"scores"' in body, f"{line}: answered {r.status}: {body[:500]}"


@pytest.mark.slow
@pytest.mark.timeout(1800)  # about 1.5 min of CPU; a loaded machine stretches it well past the default 600 s
def test_the_readme_tour_runs_word_for_word(tmp_path: Path) -> None:
    lines = tour()
    assert any(line.command.startswith("propensity train") for line in lines), "the tour lost its commands?"
    timings: list[tuple[float, str]] = []
    server: tuple[Line, subprocess.Popen[str], Output] | None = None
    port = free_port()
    try:
        for line in lines:
            started = time.monotonic()
            if line.command.startswith("source "):
                continue  # the virtual environment's bin is on PATH already
            if line.command.startswith("propensity serve"):
                proc = _serve(line, tmp_path, port)
                server = (line, proc, _wait_serving(line, proc))
            elif line.command.startswith("curl "):
                assert server is not None, f"{line}: no `propensity serve` line before it"
                _curl(line, tmp_path, port)
                _stop(*server)
                server = None
            else:
                assert server is None, (
                    f"{line}: the tour's server is still running (no curl line after serve)"
                )
                _run(line, tmp_path)
            timings.append((time.monotonic() - started, str(line)))
    finally:
        if server is not None:
            server[1].kill()
    # The Python example after the tour, on the tour's demo.
    first, code = _block(README.read_text(encoding="utf-8"), "The same from Python", "python")
    done = subprocess.run([sys.executable, "-c", "\n".join(code)], cwd=tmp_path, env=_env(), capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    _check(Line(first, "the Python example"), done.returncode, done.stdout + done.stderr)
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    print("\n".join(f"{s:7.1f}s  {what}" for s, what in timings))
    print(
        f"tour: {sum(s for s, _ in timings):.0f}s wall, {cpu.ru_utime + cpu.ru_stime:.0f}s CPU in its commands"
    )


# ------------------------------------------------------------------------------------------------ links
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings."""
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            text = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower())
            out.add(text.replace(" ", "-"))
    return out


def test_every_doc_link_resolves() -> None:
    files = [README, *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for doc in files:
        text = doc.read_text(encoding="utf-8")
        for m in LINK.finditer(text):
            target = m.group(1)
            if re.match(r"^[a-z]+:", target):  # http(s), mailto: not checked offline
                continue
            path, _, anchor = target.partition("#")
            resolved = (doc.parent / path).resolve() if path else doc
            line = text.count("\n", 0, m.start()) + 1
            if not resolved.exists():
                broken.append(f"{doc.relative_to(ROOT)}:{line}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{doc.relative_to(ROOT)}:{line}: {target} (no such heading)")
        for m in re.finditer(r"\bDESIGN\.md\b", text):
            line = text.count("\n", 0, m.start()) + 1
            broken.append(f"{doc.relative_to(ROOT)}:{line}: names DESIGN.md, which the repository does not have "
                          "(link docs/architecture.md)")  # fmt: skip
    assert not broken, "broken links:\n" + "\n".join(broken)
