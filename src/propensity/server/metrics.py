"""``/metrics`` through ``prometheus_client``: request counts and latency per route, live events, the served
model, the online store and feature freshness, process metrics, and the monitors' latest results.

Text exposition 0.0.4 by default, OpenMetrics when the scraper asks for it (``Accept``). With several worker
processes (``propensity serve --workers N``) the counters and gauges live in ``prometheus_client``'s
multi-process files (``PROMETHEUS_MULTIPROC_DIR``, set by the supervisor), so whichever worker answers a scrape
reports the sum over all of them; process metrics are then the answering worker's own.

Per request the middleware does one dict lookup and two ``prometheus_client`` updates on children resolved once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from propensity.serving.service import ScoringService

BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
disable_created_metrics()


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class Metrics:
    """This server's metrics, in a registry of their own (several apps may live in one test process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.requests = Counter("propensity_http_requests", "HTTP requests by route and status.",
                                ["route", "status"], registry=reg)  # fmt: skip
        self.latency = Histogram("propensity_http_request_duration_seconds", "Time in the app, per route.",
                                 ["route"], buckets=BUCKETS, registry=reg)  # fmt: skip
        self.events_accepted = Counter(
            "propensity_events_accepted", "Live events accepted (new).", registry=reg
        )
        self.events_duplicate = Counter("propensity_events_duplicate", "Live events already in the log.",
                                        registry=reg)  # fmt: skip
        self.batches_rejected = Counter("propensity_event_batches_rejected", "Event batches refused (422).",
                                        registry=reg)  # fmt: skip
        # Feature freshness as this server sees it: when live events last changed the online features, and how
        # late the newest of them arrived (accepted at − its event_time). Ages are derived at scrape time.
        self.features_updated = Gauge("propensity_online_features_updated_timestamp_seconds",
                                      "When live events last updated the online features (epoch seconds).",
                                      registry=reg, multiprocess_mode="max")  # fmt: skip
        self.event_lag = Gauge("propensity_live_event_lag_seconds",
                               "How late the newest live event arrived (accepted at minus its event_time).",
                               registry=reg, multiprocess_mode="mostrecent")  # fmt: skip
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._updated: float | None = None

    def observe(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        pair = self._children.get(key)
        if pair is None:
            pair = self._children[key] = (
                self.requests.labels(route, str(status)),
                self.latency.labels(route),
            )
        pair[0].inc()
        pair[1].observe(seconds)

    def events_applied(self, events: pa.Table, accepted: int, duplicates: int) -> None:
        self.events_accepted.inc(accepted)
        self.events_duplicate.inc(duplicates)
        if events.num_rows == 0:
            return
        newest = pc.max(events.column("event_time").cast(pa.timestamp("us", tz="UTC"))).as_py()
        arrived = pc.max(events.column("available_at").cast(pa.timestamp("us", tz="UTC"))).as_py()
        self._updated = time.time()
        self.features_updated.set(self._updated)
        self.event_lag.set(max(0.0, (arrived - newest).total_seconds()))

    def render(
        self,
        accept: str | None,
        service: ScoringService,
        extra_text: str = "",
        customers: int | None = None,
    ) -> tuple[bytes, str]:
        """The exposition for a scrape (format chosen from ``Accept``) and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(_Scrape(self, service, extra_text, customers)), content_type


class _Scrape:
    """One scrape's collectors: this process's (or every worker's) metrics plus gauges derived now."""

    def __init__(self, metrics: Metrics, service: ScoringService, extra_text: str, customers: int | None):
        self.metrics, self.service, self.extra_text, self.customers = metrics, service, extra_text, customers

    def collect(self) -> Iterator[Metric]:
        families: list[Metric]
        if multiprocess():
            from prometheus_client import multiprocess as mp

            families = list(mp.MultiProcessCollector(None).collect())
        else:
            families = list(self.metrics.registry.collect())
        yield from families
        yield from ProcessCollector(registry=None).collect()
        updated = _value(families, "propensity_online_features_updated_timestamp_seconds")
        if updated:
            age = GaugeMetricFamily("propensity_online_features_age_seconds",
                                    "Seconds since live events last updated the online features.")  # fmt: skip
            age.add_metric([], max(0.0, time.time() - updated))
            yield age
        model = self.service.model
        if model is not None:
            info = GaugeMetricFamily("propensity_model_info", "The served model (1).",
                                     labels=["model_version", "feature_set_version", "backend"])  # fmt: skip
            info.add_metric([model.version, model.feature_set_version, model.scorer.backend], 1)
            yield info
        if self.customers is not None:
            yield GaugeMetricFamily("propensity_online_customers", "Customers in the online store.",
                                    value=self.customers)  # fmt: skip
        if self.extra_text:
            yield from text_string_to_metric_families(self.extra_text)


def _value(families: Iterable[Metric], name: str) -> float | None:
    for family in families:
        if family.name == name:
            values = [s.value for s in family.samples if s.name == name]
            return max(values) if values else None
    return None


class MetricsMiddleware:
    """Counts every request and times it, labelled by the route that answered (``unmatched`` for none)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.observe: Callable[[str, int, float], None] = metrics.observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            self.observe(
                route.name if route is not None else "unmatched", status, time.perf_counter() - started
            )
