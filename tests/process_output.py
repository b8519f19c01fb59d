"""Waiting for a long-running command's own signal (a line it prints), not for a fixed time.

A background thread reads the process's output line by line, so the test waits on a queue: it wakes the moment
the line appears, or the moment the process exits (its output ended), and a loaded machine only makes it wait
longer. The ceiling is generous on purpose: it only turns a hung process into a failure with its output, it
does not judge speed (speed goals are benchmarks).
"""

from __future__ import annotations

import queue
import re
import subprocess
import threading
import time

# A hung start-up fails after this long. Quickstart's and the README's servers are ready in about a minute on an
# idle machine; a shared CI machine can take several times that.
CEILING_S = 1500.0


class Output:
    """Every line a process prints (stdout with stderr merged), read in the background."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None, "start the process with stdout=subprocess.PIPE"
        self.proc = proc
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, name="process-output", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)  # end of output: the process exited (or closed its stdout)

    def wait_for(self, pattern: str, *, ceiling_s: float = CEILING_S) -> re.Match[str]:
        """The first match of ``pattern`` in a new line; AssertionError with the output so far when the
        process ends first, or after ``ceiling_s``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + ceiling_s
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(left, 0.0)) if left > 0 else None
            except queue.Empty:
                line = None
                left = 0.0
            if line is None:
                why = f"still running after {ceiling_s:.0f} s" if left <= 0 else f"exited ({self._code()})"
                raise AssertionError(f"never printed /{pattern}/ ({why}); its output:\n{self.text}")
            self.lines.append(line)
            found = regex.search(line)
            if found:
                return found

    def _code(self) -> str:
        try:
            return f"code {self.proc.wait(timeout=10)}"
        except subprocess.TimeoutExpired:
            return "its output closed, the process still running"

    def rest(self, timeout: float) -> str:
        """The output after the last line read, once the process has exited (``subprocess.TimeoutExpired``
        when it is still running after ``timeout`` seconds)."""
        self.proc.wait(timeout=timeout)
        self._thread.join(timeout=5)
        tail: list[str] = []
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                tail.append(line)
        self.lines.extend(tail)
        return "".join(tail)

    @property
    def text(self) -> str:
        return "".join(self.lines)
