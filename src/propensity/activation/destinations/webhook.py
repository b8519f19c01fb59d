"""Webhook to a backend: each customer whose decision changed, POSTed once, through the durable outbox.

Per run, the customers' decisions (decisions.py) are compared with the last one enqueued for each customer;
the changed ones are enqueued in one transaction under the idempotency key ``<destination>:<run_id>:<customer>``
and then delivered (delivery.py: backoff with jitter, dead-letter file after ``max_attempts``, resume after a
crash). Records a sync could not deliver stay in the outbox and go first on the next sync.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pyarrow as pa

from propensity.activation.delivery import DeliveryReport, Outbox, OutboxRecord
from propensity.activation.destinations.base import PublishReport, PublishRun, PublishStatus, without_control
from propensity.activation.destinations.decisions import decisions, fingerprint
from propensity.config.destinations import WebhookDestination


class Webhook:
    type = "webhook"

    def __init__(
        self, spec: WebhookDestination, outbox_path: Path, *, client: httpx.Client | None = None
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.realtime = spec.realtime
        self.outbox = Outbox(outbox_path)
        self._client = client

    def enqueue_changed(self, run_id: str, rows: pa.Table) -> int:
        """Enqueue the decisions in ``rows`` that differ from the last one sent per customer; returns how many."""
        decided = list(decisions(without_control(rows)))
        last = self.outbox.fingerprints(d["customer_id"] for d in decided)
        records = []
        for d in decided:
            fp = fingerprint(d)
            if last.get(d["customer_id"]) != fp:
                key = f"{self.name}:{run_id}:{d['customer_id']}"
                records.append(OutboxRecord(key, d, subject=d["customer_id"], fingerprint=fp))
        return self.outbox.enqueue_many(records)

    def _deliver(self) -> DeliveryReport:
        headers = {}
        if self.spec.token_env:
            headers["Authorization"] = f"Bearer {os.environ.get(self.spec.token_env, '')}"
        return self.outbox.deliver(
            self.spec.url, max_attempts=self.spec.max_attempts, attempts_per_call=self.spec.attempts_per_sync,
            base_delay_s=self.spec.base_delay_s, max_delay_s=self.spec.max_delay_s, timeout_s=self.spec.timeout_s,
            concurrency=self.spec.concurrency, headers=headers, client=self._client,
        )  # fmt: skip

    def dead_message(self, dead: int) -> str:
        return (
            f"{dead} dead-lettered record(s) in {self.outbox.dead_letter_path} are not retried by itself: "
            f"once the receiver is fixed, `propensity destinations retry {self.name}` sends them again"
        )

    def publish(self, run: PublishRun, rows: pa.Table) -> PublishReport:
        enqueued = self.enqueue_changed(run.run_id, rows)
        report = self._deliver()
        left = report.pending
        # Records dead-lettered by this sync or an earlier one (an outage) are undelivered too: a run is not
        # "delivered" while any wait in the dead letter, so `activate` exits non-zero until they are retried.
        dead = self.outbox.counts()["dead"]
        status: PublishStatus = "delivered" if left == 0 and dead == 0 else "partial"
        if report.delivered == 0 and (left or report.dead_lettered):
            status = "failed"
        message = ""
        if left:
            message = f"{left} record(s) wait for the next sync"
        if dead:
            message += f"{'; ' if message else ''}{self.dead_message(dead)}"
        return PublishReport(
            self.name, self.type, status, rows=rows.num_rows, sent=report.attempted, accepted=report.delivered,
            failed=report.failed, message=message, location=self.spec.url,
            details={"changed": enqueued, "dead": dead, **report.to_json()},
        )  # fmt: skip

    def retry_dead(self) -> PublishReport:
        """Put the dead-lettered records back in the queue (fresh attempts) and deliver them, under their original
        idempotency keys (a receiver that honours them applies each record once)."""
        requeued = self.outbox.requeue_dead()
        report = self._deliver()
        counts = self.outbox.counts()
        status: PublishStatus = "delivered" if counts["pending"] == 0 and counts["dead"] == 0 else "partial"
        if requeued == 0 and report.attempted == 0:
            status = "skipped"
        elif report.delivered == 0:
            status = "failed"
        parts = [f"{requeued} dead-lettered record(s) requeued"]
        if counts["pending"]:
            parts.append(f"{counts['pending']} record(s) wait for the next sync")
        if counts["dead"]:
            parts.append(f"{counts['dead']} dead-lettered again ({self.outbox.dead_letter_path})")
        return PublishReport(
            self.name, self.type, status, sent=report.attempted, accepted=report.delivered, failed=report.failed,
            message="; ".join(parts), location=self.spec.url,
            details={"requeued": requeued, "dead": counts["dead"], **report.to_json()},
        )  # fmt: skip
