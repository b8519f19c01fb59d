"""Profile store: a Redis hash per customer for in-session tools, expiring when its scores do.

Key ``<prefix>:<customer_id>``; fields ``propensity_<action>`` (the score), ``percentile_<action>``,
``segment_<action>``, ``eligible_<action>``, ``next_best_action``, ``run_id``, ``model_version``, ``scored_at``,
``expires`` (ISO 8601 UTC) and ``scored_at_us`` (for ordering). The key expires at ``expiration_at``. A write never
replaces a newer decision (a batch run arriving after a real-time rescore), which a small Lua script checks and
applies atomically.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa
import redis

from propensity.activation.destinations.base import PublishReport, PublishRun, without_control
from propensity.activation.destinations.decisions import decisions
from propensity.config.destinations import ProfileDestination

# KEYS[1] the hash; ARGV[1] scored_at in µs, ARGV[2] expire-at in ms, ARGV[3..] field, value pairs.
_WRITE_IF_NEWER = """
local current = tonumber(redis.call('HGET', KEYS[1], 'scored_at_us') or '-1')
if current > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'scored_at_us', ARGV[1], unpack(ARGV, 3))
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
"""
_BATCH = 1000


class ProfileStore:
    type = "profile"

    def __init__(self, spec: ProfileDestination, *, client: redis.Redis | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.realtime = spec.realtime
        self.redis = client or redis.Redis.from_url(spec.redis_url)
        self._script = self.redis.register_script(_WRITE_IF_NEWER)

    def key(self, customer_id: str) -> str:
        return f"{self.spec.prefix}:{customer_id}"

    def publish(self, run: PublishRun, rows: pa.Table) -> PublishReport:
        written = stale = 0
        pending: list[dict[str, Any]] = []
        for d in decisions(without_control(rows)):
            pending.append(d)
            if len(pending) >= _BATCH:
                w, s = self._write(pending)
                written, stale, pending = written + w, stale + s, []
        if pending:
            w, s = self._write(pending)
            written, stale = written + w, stale + s
        return PublishReport(
            self.name, self.type, "delivered", rows=rows.num_rows, sent=written + stale, accepted=written,
            location=f"{self.spec.prefix}:*", details={"written": written, "kept_newer": stale},
        )  # fmt: skip

    def _write(self, batch: list[dict[str, Any]]) -> tuple[int, int]:
        pipe = self.redis.pipeline(transaction=False)
        for d in batch:
            fields: list[Any] = [
                "next_best_action", d["next_best_action"] or "", "run_id", d["scoring_run_id"],
                "model_version", d["model_version"], "scored_at", d["scored_at"], "expires", d["expiration_at"],
            ]  # fmt: skip
            for action, s in d["scores"].items():
                fields += [
                    f"propensity_{action}", "" if s["score"] is None else repr(float(s["score"])),
                    f"percentile_{action}", "" if s["percentile"] is None else repr(float(s["percentile"])),
                    f"segment_{action}", s["segment"] or "", f"eligible_{action}", "1" if s["eligible"] else "0",
                ]  # fmt: skip
            self._script(
                keys=[self.key(d["customer_id"])],
                args=[_micros(d["scored_at"]), _micros(d["expiration_at"]) // 1000, *fields],
                client=pipe,
            )
        results = pipe.execute()
        written = sum(1 for r in results if int(r) == 1)
        return written, len(results) - written

    def read(self, customer_id: str) -> dict[str, str]:
        """The stored profile of one customer (empty when none or expired)."""
        raw = self.redis.hgetall(self.key(customer_id))
        return {k.decode(): v.decode() for k, v in raw.items()}  # type: ignore[union-attr]


def _micros(iso: str) -> int:
    dt = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return int(dt.timestamp() * 1_000_000)
