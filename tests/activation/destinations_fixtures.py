"""Shared pieces for the activation tests: canonical score rows built by hand and a real local HTTP receiver."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from tests.services import free_port

from propensity.core.score_row import SCORE_ROW_SCHEMA
from propensity.workspace import Workspace

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def canonical_rows(
    customers: int | Sequence[str] = 100,
    *,
    actions: Sequence[str] = ("buy_7d", "churn_30d"),
    run_id: str = "run-1",
    scored_at: datetime | None = None,
    ttl: timedelta = timedelta(days=1),
    scores: np.ndarray | None = None,
    seed: int = 0,
    consent: dict[str, bool] | None = None,
    holdout_group: str | None = None,
) -> pa.Table:
    """Score rows (SCORE_ROW_SCHEMA) for ``customers`` × ``actions``; scores uniform unless given."""
    ids = [f"c{i}" for i in range(customers)] if isinstance(customers, int) else list(customers)
    scored_at = scored_at or NOW
    n = len(ids) * len(actions)
    rng = np.random.default_rng(seed)
    s = rng.uniform(0.0, 1.0, n) if scores is None else np.asarray(scores, dtype=np.float64)
    pct = np.floor(s * 100.0)
    segment = np.where(pct >= 80, "high", np.where(pct >= 40, "medium", "low"))
    best = [actions[int(np.argmax(s[i :: len(ids)][: len(actions)]))] for i in range(len(ids))]
    cust = [c for _a in actions for c in ids]
    act = [a for a in actions for _c in ids]
    nba = [None if holdout_group == "control" else best[i % len(ids)] for i in range(n)]
    policy = [
        "holdout_control" if holdout_group == "control" else ("ev_max" if a == b else "ev_lower")
        for a, b in zip(act, nba, strict=True)
    ]
    return pa.table(
        {
            "customer_id": cust,
            "action": act,
            "score": s,
            "percentile": pct,
            "segment": segment.tolist(),
            "eligible": [True] * n,
            "next_best_action": nba,
            "reason_codes": ["[]"] * n,
            "holdout_group": [holdout_group] * n,
            "model_id": ["m1"] * n,
            "model_version": ["v1"] * n,
            "feature_set_version": ["fs1"] * n,
            "scoring_run_id": [run_id] * n,
            "scored_at": [scored_at] * n,
            "expiration_at": [scored_at + ttl] * n,
            "decision_policy": policy,
            "consent": [json.dumps(consent) if consent is not None else None] * n,
            "fallback": [False] * n,
            "as_of": [scored_at] * n,
            "trigger_id": [None] * n,
        },
        schema=SCORE_ROW_SCHEMA,
    )


@dataclass
class Received:
    path: str
    key: str | None
    body: Any


@dataclass
class Receiver:
    """A real HTTP server on a free loopback port that records every POST and can fail on demand.

    ``fail_next(n, status)`` answers the next n requests with ``status``; ``stop()`` closes the socket (the
    receiver is "down": connection refused) and ``start()`` brings it back on the same port. Audience requests
    (a body with ``adds``/``removes``) are answered ``{"accepted": n, "failed": [...]}``, failing the hashes in
    ``reject``.
    """

    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)
    reject: set[str] = field(default_factory=set)
    _failures: list[int] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                with receiver._lock:
                    status = receiver._failures.pop(0) if receiver._failures else 200
                    if status == 200:
                        receiver.received.append(
                            Received(self.path, self.headers.get("Idempotency-Key"), body)
                        )
                answer: dict[str, Any] = {}
                if status == 200 and isinstance(body, dict) and "adds" in body:
                    hashes = list(body.get("adds", [])) + list(body.get("removes", []))
                    failed = [h for h in hashes if h in receiver.reject]
                    answer = {"accepted": len(hashes) - len(failed), "failed": failed}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def fail_next(self, n: int, status: int = 503) -> None:
        with self._lock:
            self._failures.extend([status] * n)

    def keys(self) -> Counter[str | None]:
        with self._lock:
            return Counter(r.key for r in self.received)

    def bodies(self) -> list[Any]:
        with self._lock:
            return [r.body for r in self.received]


def no_sleep(_seconds: float) -> None:
    """Backoff without waiting, so retry tests run in milliseconds."""


def flatten(values: Iterable[Iterable[str]]) -> list[str]:
    return [v for vs in values for v in vs]


def workspace_with_attributes(
    root: Path, people: dict[str, dict[str, str]], extra_yaml: str = ""
) -> Workspace:
    """A workspace whose ``attributes`` table holds ``people`` ({customer_id: {attribute: value}})."""
    import csv

    from propensity.events.ingest import ingest_attributes

    names = sorted({k for attrs in people.values() for k in attrs})
    path = root / "people.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["customer_id", *names])
        for cid, attrs in people.items():
            writer.writerow([cid, *(attrs.get(n, "") for n in names)])
    (root / "propensity.yaml").write_text(
        "attributes:\n  - {name: people, path: people.csv, format: csv}\n" + extra_yaml, encoding="utf-8"
    )
    ws = Workspace.open(root)
    ingest_attributes(ws, ws.spec.attributes[0])
    return ws


def store_run(ws: Workspace, rows: pa.Table, *, as_of: datetime | None = None) -> Any:
    """Write hand-built rows as a run into the workspace's real score store; returns the ScoringRun."""
    import pyarrow.compute as pc

    from propensity.scoring.score_store import ScoringRun, open_score_store

    run = ScoringRun(
        run_id=str(rows.column("scoring_run_id")[0].as_py()),
        scored_at=pc.min(rows.column("scored_at")).as_py(),
        expiration_at=pc.max(rows.column("expiration_at")).as_py(),
        as_of=as_of or pc.min(rows.column("scored_at")).as_py(),
        model_version="v1",
        feature_set_version="fs1",
        rows=rows.num_rows,
        contract_version="1.0.0",
    )
    open_score_store(ws).write_run(rows, run)
    return run
