"""What the handlers share, held on ``app.state.server``: the scoring service, the workspace, keys, limits,
metrics, and the optional real-time activator and monitor scheduler."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from propensity.server.metrics import Metrics
from propensity.serving.auth import KeyRing
from propensity.serving.service import ScoringService
from propensity.workspace import Workspace

if TYPE_CHECKING:
    from propensity.activation.realtime import RealtimeActivator
    from propensity.monitoring.gauges import MonitorScheduler
    from propensity.serving.live import LivePath

MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass
class ServerState:
    """The scoring service, the workspace (for live ingest and model moves; None disables them), limits."""

    service: ScoringService
    workspace: Workspace | None = None
    keys: KeyRing = field(default_factory=KeyRing)
    max_body_bytes: int = MAX_BODY_BYTES
    ready: bool = True
    metrics: Metrics = field(default_factory=Metrics)
    # Real-time activation: destinations flagged `realtime: true` get changed decisions as events arrive.
    realtime: RealtimeActivator | None = None
    # Monitors run on a schedule in this process; their latest results are exported on /metrics.
    monitors: MonitorScheduler | None = None
    # With several worker processes the monitors run in the supervisor; workers export the stored latest run.
    stored_monitor_gauges: bool = False
    # Live events: durable in this server's spool, moved into the log by a background sync (None: made on the
    # first event post, with no background sync; the next process to open the log moves the spool in).
    live: LivePath | None = None
