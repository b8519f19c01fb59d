"""The ``segments`` and ``policies`` sections of propensity.yaml.

>>> SegmentSettings().names, SegmentSettings().quantiles
(['high', 'medium', 'low'], [0.8, 0.5])
>>> p = PolicySettings.model_validate({"actions": {"buy_7d": {"value": 40, "cost": 0.5, "channel": "email"}},
...                                    "consent": {"email": "email_opt_in"}})
>>> p.for_action("buy_7d").channel, p.for_action("churn_30d").value
('email', 1.0)
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from propensity.config.base import StrictModel
from propensity.config.durations import Duration, FiniteDuration


class SegmentSettings(StrictModel):
    """Tiers per action, cut from each run's own score distribution (see docs/scoring.md, "Segments")."""

    # Tier names from the highest scores to the lowest.
    names: list[str] = Field(default_factory=lambda: ["high", "medium", "low"], min_length=2)
    # Where each tier but the last starts, as a quantile of the run's eligible scores, highest first:
    # the default puts the top 20% in `high`, the next 30% in `medium`, the rest in `low`.
    quantiles: list[float] = Field(default_factory=lambda: [0.8, 0.5])
    # auto: quantile cuts, except that when the scores are clearly bimodal the cut nearest the valley between
    # the two modes moves onto it; quantile: always the quantile cuts.
    method: Literal["auto", "quantile"] = "auto"
    # Fewer eligible scores than this: no bimodality test (quantile cuts only).
    min_scores_for_valley: int = Field(default=200, ge=10)

    @model_validator(mode="after")
    def _consistent(self) -> SegmentSettings:
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"names: each tier needs its own name; got {self.names}")
        if len(self.quantiles) != len(self.names) - 1:
            raise ValueError(
                f"quantiles: {len(self.names)} names need {len(self.names) - 1} quantiles (where each tier but "
                f"the last starts, highest first), got {len(self.quantiles)}"
            )
        if any(not 0.0 < q < 1.0 for q in self.quantiles) or any(
            a <= b for a, b in zip(self.quantiles, self.quantiles[1:], strict=False)
        ):
            raise ValueError(
                f"quantiles: must be strictly decreasing values in (0, 1), e.g. [0.8, 0.5]; got {self.quantiles}"
            )
        return self


class ActionPolicy(StrictModel):
    """How one action is judged: activated only above ``threshold``, worth ``value`` when it happens, costing
    ``cost`` per activation, sent through ``channel`` (whose consent is then required)."""

    threshold: float = Field(
        default=0.0, ge=0.0, le=1.0, description="The action is activated only for scores above this."
    )
    value: float = Field(
        default=1.0,
        ge=0.0,
        description="What the action is worth when it happens (expected value = score × value − cost).",
    )
    cost: float = Field(default=0.0, ge=0.0, description="What one activation costs.")
    channel: str | None = Field(
        default=None,
        description="The channel the action is sent through; its consent (policies.consent) is then required.",
    )


class SuppressionList(StrictModel):
    """Customers not activated: the ids in ``file`` (one per line; a CSV's first column), those whose attribute
    ``attribute`` (as of the run) is one of ``values``, and/or those with any event of ``event_types`` known by
    the run (e.g. ``[email_bounce, spam_complaint, unsubscribe]``: an unreachable inbox). With ``channel``, only
    the actions sent through that channel are suppressed (the customer stays reachable on the others)."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="The list's name (shown in why a customer was suppressed).",
    )
    file: str | None = Field(
        default=None,
        description="A file of customer ids, one per line (a CSV's first column), relative to the spec's folder.",
    )
    attribute: str | None = Field(
        default=None,
        description="A customer attribute: customers whose value (as of the run) is one of `values` are suppressed.",
    )
    values: list[str] = Field(
        default_factory=lambda: ["true", "1", "yes"],
        description="The attribute values that suppress a customer.",
    )
    event_types: list[str] = Field(
        default_factory=list,
        description="Event types that suppress a customer with any such event known by the run (email_bounce, ...).",
    )
    channel: str | None = Field(
        default=None,
        description="Suppress only the actions sent through this channel (others stay reachable).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> SuppressionList:
        if self.file is None and self.attribute is None and not self.event_types:
            raise ValueError(
                f"suppression list {self.name!r}: give `file:` (customer ids), `attribute:` or `event_types:`"
            )
        return self


class FrequencyCap(StrictModel):
    """At most ``max`` activations (runs in which the customer got a next best action) per ``period``."""

    max: int = Field(ge=1, description="Most activations per customer in `period`.")
    period: FiniteDuration = Field(
        default_factory=lambda: Duration.parse("7d"),
        description="The window activations are counted over (earlier runs).",
    )


class PolicySettings(StrictModel):
    """The decision policy: from scores to each customer's next best action (see docs/scoring.md)."""

    # Per action; actions not listed use `default`.
    actions: dict[str, ActionPolicy] = Field(default_factory=dict)
    default: ActionPolicy = Field(default_factory=ActionPolicy)
    # channel → the customer attribute holding its consent (true/1/yes/y/opt_in = consent).
    consent: dict[str, str] = Field(default_factory=dict)
    # What a missing consent attribute means; false (the safe reading) blocks the channel.
    consent_when_unknown: bool = False
    suppression: list[SuppressionList] = Field(default_factory=list)
    frequency_cap: FrequencyCap | None = None

    @model_validator(mode="after")
    def _channels_have_consent(self) -> PolicySettings:
        for name, p in [*self.actions.items(), ("default", self.default)]:
            if p.channel is not None and p.channel not in self.consent:
                where = "default" if name == "default" else f"actions.{name}"
                known = ", ".join(sorted(self.consent)) or "(none)"
                raise ValueError(
                    f"{where}.channel: {p.channel!r} has no consent attribute; add consent: {{{p.channel}: "
                    f"<attribute name>}} (known channels: {known})"
                )
        names = [s.name for s in self.suppression]
        if len(set(names)) != len(names):
            raise ValueError(f"suppression: names must be unique; got {names}")
        return self

    def for_action(self, action: str) -> ActionPolicy:
        return self.actions.get(action, self.default)


class TargetSettings(StrictModel):
    """A named target: who one action is sent to, chosen on the console's targeting page (or written by hand).

    The customers of a run a target selects are those eligible for ``action``, not in a control group, and
    either scored at or above ``threshold`` or among the ``top_share`` highest scores (ties at the cut are all
    in). A destination with ``target: <name>`` publishes only those rows. ``cost_per_contact`` and
    ``value_per_conversion`` are the economics the target was chosen with (expected profit = Σ score × value −
    contacts × cost); ``saved_by`` / ``saved_at`` record who chose it and when.

    >>> TargetSettings.model_validate({"name": "buy_q4", "action": "buy_7d", "threshold": 0.2}).rule()
    'score >= 0.2'
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$", max_length=64)
    action: str
    # Exactly one of the two: a score threshold, or the top share of the eligible, treated customers.
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    top_share: float | None = Field(default=None, gt=0.0, le=1.0)
    cost_per_contact: float = Field(default=0.0, ge=0.0)
    value_per_conversion: float = Field(default=0.0, ge=0.0)
    note: str | None = Field(default=None, max_length=1000)
    saved_by: str | None = None
    saved_at: str | None = None

    @model_validator(mode="after")
    def _one_rule(self) -> TargetSettings:
        if (self.threshold is None) == (self.top_share is None):
            raise ValueError(
                f"target {self.name!r}: give exactly one of threshold (a score, 0-1) or top_share (0-1, the "
                "share of eligible customers with the highest scores)"
            )
        return self

    @field_validator("saved_at", mode="before")
    @classmethod
    def _text_time(cls, value: object) -> object:
        return value.isoformat() if hasattr(value, "isoformat") else value

    def rule(self) -> str:
        if self.threshold is not None:
            return f"score >= {self.threshold:g}"
        return f"top {self.top_share:.1%} by score"
