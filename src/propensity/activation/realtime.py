"""Real-time activation: when ingest rescores customers, destinations flagged ``realtime: true`` receive each
customer's decision, only when it changed.

The server calls :meth:`RealtimeActivator.on_customers_changed` after applying events, with the online
predictions of the customers they touched (the dicts ``ScoringService.predict`` returns). The activator turns
them into canonical score rows (one per customer × action), lets the decision policy choose each customer's next
best action, and compares each customer's decision (next best action; per action eligibility and segment) with
the last one that destination received:

* a webhook enqueues the changed decisions in its durable outbox at once (so nothing is lost if the process
  dies) and delivers them on a background thread, with the outbox's retries and dead letter, so a slow receiver
  never holds up ingest;
* a profile store is written at once (one Redis round trip per batch);

and a destination is not sent a decision it already has. Decisions carry ``scored_at`` and ``expiration_at``;
an expired prediction is never sent. Experiment control groups are assigned online by the same hash as in batch,
so a control customer is held out of real-time activation too.

Example::

    activator = RealtimeActivator(workspace)            # the spec's realtime destinations
    activator.on_customers_changed(["c42"], {"c42": service.predict("c42")})
    activator.close()                                    # waits for queued webhook deliveries
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from propensity.activation.destinations import build_destination, destination_specs, state_dir
from propensity.activation.destinations.base import Destination, PublishReport, PublishRun, fresh_rows
from propensity.activation.destinations.decisions import decisions, fingerprint
from propensity.activation.destinations.webhook import Webhook
from propensity.config.experiments import ExperimentSettings
from propensity.core.holdout import group
from propensity.core.score_row import SCORE_ROW_SCHEMA
from propensity.workspace import Workspace

_MEMORY_SCHEMA = """
CREATE TABLE IF NOT EXISTS last_sent (
    destination TEXT NOT NULL,
    customer_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    PRIMARY KEY (destination, customer_id)
);
"""


@dataclass
class RealtimeReport:
    """What one call did: customers seen, and per destination how many decisions changed (and went out)."""

    customers: int
    changed: dict[str, int] = field(default_factory=dict)
    reports: list[PublishReport] = field(default_factory=list)


def prediction_rows(
    predictions: Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]],
    experiments: ExperimentSettings | None = None,
) -> pa.Table:
    """Canonical score rows from online predictions (``ScoringService.predict`` dicts), one per action, with
    each customer's holdout group from ``experiments`` (the same hash as batch scoring: a control customer is
    held out online too)."""
    items = list(predictions.values()) if isinstance(predictions, Mapping) else list(predictions)
    cols: dict[str, list[Any]] = {name: [] for name in SCORE_ROW_SCHEMA.names}
    for p in items:
        scored_at = _parse(p["scored_at"])
        expiration_at = _parse(p["expiration_at"])
        run_id = "rt-" + scored_at.strftime("%Y%m%dT%H%M%S%fZ")
        version = p.get("model_version") or "fallback"
        for action, s in p.get("scores", {}).items():
            score = s.get("probability")
            eligible = s.get("eligible") is not False and score is not None
            cols["customer_id"].append(str(p["customer_id"]))
            cols["action"].append(action)
            cols["score"].append(score if eligible else None)
            cols["percentile"].append(s.get("percentile") if eligible else None)
            cols["segment"].append(s.get("segment") if eligible else None)
            cols["eligible"].append(eligible)
            cols["next_best_action"].append(None)
            cols["reason_codes"].append(None)
            holdout = experiments.holdout_for(action) if experiments is not None else None
            cols["holdout_group"].append(None if holdout is None else group(str(p["customer_id"]), holdout))
            cols["model_id"].append(version)
            cols["model_version"].append(version)
            cols["feature_set_version"].append(p.get("feature_set_version") or "")
            cols["scoring_run_id"].append(run_id)
            cols["scored_at"].append(scored_at)
            cols["expiration_at"].append(expiration_at)
            cols["decision_policy"].append(None)
            cols["consent"].append(None)
            cols["fallback"].append(bool(s.get("fallback", p.get("fallback", False))))
            cols["as_of"].append(_parse(p["as_of"]) if p.get("as_of") else scored_at)
            cols["trigger_id"].append(None)
    return pa.table(cols, schema=SCORE_ROW_SCHEMA)


class RealtimeActivator:
    """Sends changed decisions to the real-time destinations; see the module docstring."""

    def __init__(
        self,
        workspace: Workspace,
        *,
        destinations: Sequence[Destination] | None = None,
        background: bool = True,
        retry_interval_s: float = 5.0,
    ) -> None:
        self.workspace = workspace
        if destinations is None:
            specs = [s for s in destination_specs(workspace) if s.realtime]
            destinations = [build_destination(s, workspace) for s in specs]
        self.destinations = [d for d in destinations if d.realtime]
        self._webhooks = [d for d in self.destinations if isinstance(d, Webhook)]
        self._memory_path = state_dir(workspace) / "realtime.sqlite"
        with self._connect() as con:
            con.executescript(_MEMORY_SCHEMA)
        self._background = background
        self.retry_interval_s = retry_interval_s
        self._cond = threading.Condition()
        self._requested = 0
        self._done = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        if background and self._webhooks:
            self._thread = threading.Thread(target=self._deliver_loop, name="realtime-delivery", daemon=True)
            self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self._memory_path, timeout=60.0, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        return con

    # -- the entry point --------------------------------------------------------------------------------------
    def on_customers_changed(
        self,
        customer_ids: Sequence[str],
        predictions: Mapping[str, Mapping[str, Any]] | Iterable[Mapping[str, Any]],
    ) -> RealtimeReport:
        """Build the decisions of ``customer_ids`` from ``predictions`` and send the changed ones."""
        wanted = set(customer_ids)
        items = list(predictions.values()) if isinstance(predictions, Mapping) else list(predictions)
        rows = prediction_rows(
            (p for p in items if p["customer_id"] in wanted), self.workspace.spec.experiments
        )
        report = RealtimeReport(customers=len(wanted))
        if rows.num_rows == 0 or not self.destinations:
            return report
        rows = fresh_rows(self._decide(rows), datetime.now(UTC))
        if rows.num_rows == 0:
            return report
        run = PublishRun.from_rows(rows)
        for dest in self.destinations:
            if isinstance(dest, Webhook):
                # The outbox remembers each customer's last enqueued decision: it sends only changes.
                report.changed[dest.name] = dest.enqueue_changed(run.run_id, rows)
                continue
            changed = self._changed(dest.name, rows)
            report.changed[dest.name] = len(changed)
            if not changed:
                continue
            subset = rows.filter(pc.is_in(rows.column("customer_id"), pa.array(sorted(changed), pa.string())))
            outcome = dest.publish(run, subset)
            report.reports.append(outcome)
            if outcome.status == "delivered":
                self._remember(dest.name, changed)
        if any(report.changed.get(w.name) for w in self._webhooks):
            self._request_delivery()
        return report

    def _decide(self, rows: pa.Table) -> pa.Table:
        from propensity.scoring.policy import DecisionContext, decide

        return decide(rows, self.workspace.spec.policies, context=DecisionContext())

    def _changed(self, destination: str, rows: pa.Table) -> dict[str, str]:
        current = {d["customer_id"]: fingerprint(d) for d in decisions(rows)}
        with self._connect() as con:
            last = dict(
                con.execute(
                    f"SELECT customer_id, fingerprint FROM last_sent WHERE destination = ? AND customer_id IN "
                    f"({','.join('?' * len(current))})",
                    [destination, *current],
                ).fetchall()
            )
        return {c: fp for c, fp in current.items() if last.get(c) != fp}

    def _remember(self, destination: str, fingerprints: Mapping[str, str]) -> None:
        with self._connect() as con:
            con.executemany(
                "INSERT INTO last_sent VALUES (?, ?, ?) ON CONFLICT (destination, customer_id) "
                "DO UPDATE SET fingerprint = excluded.fingerprint",
                [(destination, c, fp) for c, fp in fingerprints.items()],
            )

    # -- webhook delivery ---------------------------------------------------------------------------------
    def _request_delivery(self) -> None:
        if not self._background:
            self._deliver_all()
            return
        with self._cond:
            self._requested += 1
            self._cond.notify_all()

    def _deliver_all(self) -> bool:
        """One delivery pass over every webhook outbox; True when records are left for a later pass."""
        left = False
        for hook in self._webhooks:
            spec = hook.spec
            report = hook.outbox.deliver(
                spec.url, max_attempts=spec.max_attempts, attempts_per_call=spec.attempts_per_sync,
                base_delay_s=spec.base_delay_s, max_delay_s=spec.max_delay_s, timeout_s=spec.timeout_s,
                concurrency=spec.concurrency,
            )  # fmt: skip
            left |= report.pending > 0
        return left

    def _deliver_loop(self) -> None:
        left = bool(self._webhooks)  # records a previous process left in the outboxes go out first
        while True:
            with self._cond:
                if self._requested == self._done and not self._closed:
                    # Records left by a failed pass (a receiver that is down) are retried after a pause.
                    self._cond.wait(timeout=self.retry_interval_s if left else None)
                if self._closed and self._requested == self._done:
                    return  # what is still pending stays in the durable outbox for the next start
                target = self._requested
            try:
                left = self._deliver_all()
            finally:
                with self._cond:
                    self._done = target
                    self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every delivery requested so far has been attempted; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._done >= self._requested, timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Finish the queued deliveries (up to ``timeout``) and stop the background thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)


def _parse(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)
