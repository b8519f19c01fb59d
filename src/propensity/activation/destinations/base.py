"""What every destination is: ``publish(run, rows) -> PublishReport`` over canonical score rows.

A destination receives the rows of one scoring run (SCORE_ROW_SCHEMA) that are still fresh and allowed to be
activated; it sends what it needs of them and says what happened. Publishing the same run twice must not send
anything twice: each adapter keeps its own record of what the far side has (a manifest, a sync state, an outbox).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.compute as pc

PublishStatus = Literal["delivered", "partial", "failed", "skipped"]


@dataclass(frozen=True)
class PublishRun:
    """The run metadata a destination needs (a scoring run, or a real-time decision batch)."""

    run_id: str
    scored_at: datetime
    expiration_at: datetime
    model_version: str
    contract_version: str | None = None

    @classmethod
    def of(cls, run: Any) -> PublishRun:
        """From any object with these attributes (the score store's ``ScoringRun``)."""
        return cls(
            run_id=str(run.run_id),
            scored_at=run.scored_at,
            expiration_at=run.expiration_at,
            model_version=str(run.model_version),
            contract_version=getattr(run, "contract_version", None),
        )

    @classmethod
    def from_rows(cls, rows: pa.Table, *, contract_version: str | None = None) -> PublishRun:
        """From the rows themselves (every row carries its run id, times and model version)."""
        if rows.num_rows == 0:
            raise ValueError("cannot describe a run from zero rows")
        return cls(
            run_id=str(rows.column("scoring_run_id")[0].as_py()),
            scored_at=pc.min(rows.column("scored_at")).as_py(),
            expiration_at=pc.max(rows.column("expiration_at")).as_py(),
            model_version=str(rows.column("model_version")[0].as_py()),
            contract_version=contract_version,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "scored_at": self.scored_at.isoformat(),
            "expiration_at": self.expiration_at.isoformat(),
            "model_version": self.model_version,
            "contract_version": self.contract_version,
        }


@dataclass
class PublishReport:
    """One destination's outcome for one run. ``sent`` counts records (or identifiers) put on the wire."""

    destination: str
    type: str
    status: PublishStatus
    rows: int = 0
    sent: int = 0
    accepted: int = 0
    failed: int = 0
    location: str | None = None
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "type": self.type,
            "status": self.status,
            "rows": self.rows,
            "sent": self.sent,
            "accepted": self.accepted,
            "failed": self.failed,
            "location": self.location,
            "message": self.message,
            "details": self.details,
        }


@runtime_checkable
class Destination(Protocol):
    """A place decisions go. ``realtime`` destinations also receive decisions as customers are rescored."""

    name: str
    type: str
    realtime: bool

    def publish(self, run: PublishRun, rows: pa.Table) -> PublishReport: ...


def fresh_rows(rows: pa.Table, now: datetime) -> pa.Table:
    """The rows whose ``expiration_at`` is still ahead of ``now`` (an expired score is never sent anywhere)."""
    return rows.filter(
        pc.greater(rows.column("expiration_at"), pa.scalar(now, rows.schema.field("expiration_at").type))
    )


def without_control(rows: pa.Table) -> pa.Table:
    """The rows of customers not held out as an experiment's control group (a control customer is not acted on)."""
    group = rows.column("holdout_group")
    return rows.filter(pc.invert(pc.fill_null(pc.equal(group, "control"), False)))


def select_actions(rows: pa.Table, actions: list[str] | None) -> pa.Table:
    if actions is None:
        return rows
    return rows.filter(pc.is_in(rows.column("action"), pa.array(actions, pa.string())))
