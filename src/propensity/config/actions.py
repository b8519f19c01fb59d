"""Actions: the ``actions:`` section of ``propensity.yaml`` — what is predicted, for whom, over which horizon.

An action says which future events make the label (``target``), whether the label is their occurrence or their
absence (``outcome``; churn is the absence of qualifying activity), over which ``horizon`` after the cutoff
(optionally after a ``gap``), and who is eligible. Five templates come out of the box (``buy``, ``upgrade``,
``renew``, ``respond``, ``churn``); any key written next to ``template:`` overrides the template's default, and
an action without a template is fully user-defined.

>>> from pydantic import TypeAdapter
>>> acts = TypeAdapter(list[Action]).validate_python([{"template": "buy"}, {"template": "churn", "horizon": "60d"}])
>>> [(a.name, str(a.horizon), a.outcome) for a in acts]
[('buy_7d', '7d', 'occurs'), ('churn_60d', '60d', 'absent')]
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from propensity.config.durations import Duration, FiniteDuration, WindowDuration
from propensity.config.predicates import Predicate, field_kind, parse_predicate

ActionTemplate = Literal["buy", "upgrade", "renew", "respond", "churn"]
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

# Everything a customer does on the site or in the app; billing, refunds, support contacts, campaign sends
# and opens are not engagement. (The synthetic data set uses exactly this list; see docs/synthetic-data.md.)
QUALIFYING_ACTIVITY: tuple[str, ...] = (
    "page_view",
    "product_view",
    "search",
    "cart_add",
    "cart_remove",
    "checkout",
    "purchase",
    "coupon_redemption",
    "campaign_click",
)

TEMPLATES: dict[str, dict[str, Any]] = {
    "buy": {"target": {"event_type": ["purchase"]}, "horizon": "7d"},
    "upgrade": {
        "target": {"event_type": ["plan_upgrade"]},
        "horizon": "30d",
        "eligibility": {"attribute": {"name": "plan", "not_in": ["free"]}},
    },
    "renew": {
        "target": {"event_type": ["renewal"]},
        "horizon": "30d",
        "eligibility": {
            "attribute": {"name": "plan", "not_in": ["free"]},
            "due": {"event_type": ["subscription_start", "renewal"], "cycle": "30d"},
        },
    },
    "respond": {
        "trigger": {"event_type": ["campaign_sent"]},
        "target": {"event_type": ["purchase", "coupon_redemption"], "same_campaign": True},
        "horizon": "7d",
    },
    "churn": {
        "target": {"event_type": list(QUALIFYING_ACTIVITY)},
        "outcome": "absent",
        "horizon": "30d",
        "eligibility": {"active_within": "30d"},
    },
}


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _check_predicate(value: str | None) -> str | None:
    if value is not None:
        pred = parse_predicate(value)  # raises ExpressionError (a ValueError) naming the problem
        if "event_date" in pred.fields():
            raise ValueError(
                "event_date is for features (counting active days); compare event times with a horizon, gap "
                "or the spine's cutoffs instead"
            )
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventFilter(_Strict):
    """Events of some types, optionally filtered by a ``where:`` predicate (the feature engine's language)."""

    event_type: list[str] = Field(min_length=1, description="One event type or a list.")
    where: str | None = Field(default=None, description="A predicate such as amount > 0.")

    _types = field_validator("event_type", mode="before")(_as_list)
    _where = field_validator("where")(_check_predicate)

    @property
    def predicate(self) -> Predicate | None:
        return None if self.where is None else parse_predicate(self.where)


class Target(EventFilter):
    """The events that make the label. ``same_campaign``: only events carrying the trigger's campaign_id."""

    same_campaign: bool = Field(
        default=False,
        description="Only target events carrying the trigger's campaign_id count (respond: a purchase through that campaign).",
    )


class AttributeCondition(_Strict):
    """An attribute as of the cutoff must (not) be one of some values; a missing value is never eligible."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(description="The attribute whose value, as of the cutoff, decides eligibility.")
    in_: list[str] | None = Field(
        default=None, alias="in", description="Eligible when the value is one of these (give in or not_in)."
    )
    not_in: list[str] | None = Field(
        default=None,
        description="Eligible when the value is none of these (a missing value is never eligible).",
    )

    @model_validator(mode="after")
    def _one(self) -> AttributeCondition:
        if (self.in_ is None) == (self.not_in is None):
            raise ValueError(
                "give exactly one of `in:` or `not_in:` (the values that make a customer eligible)"
            )
        return self


class DueRule(_Strict):
    """Eligible when a billing event (the latest of ``event_type`` by the cutoff) plus ``cycle`` falls due in
    the label window: subscribers whose renewal is due within the horizon."""

    event_type: list[str] = Field(
        default_factory=lambda: ["subscription_start", "renewal"],
        min_length=1,
        description="Billing events that start a cycle (subscription_start, renewal).",
    )
    cycle: FiniteDuration = Field(
        default_factory=lambda: Duration.parse("30d"),
        description="Length of a billing cycle: the next renewal is due this long after the latest billing event.",
    )

    _types = field_validator("event_type", mode="before")(_as_list)


class Eligibility(_Strict):
    """Who is scored; all conditions must hold. Empty: every customer known by the cutoff."""

    active_within: WindowDuration | None = Field(
        default=None,
        description="Had qualifying activity in (t - this, t]; churn's eligibility. lifetime: any activity by t.",
    )
    active_event_type: list[str] | None = Field(
        default=None, description="What counts as activity; the target's event types when absent."
    )
    attribute: AttributeCondition | None = None
    due: DueRule | None = None
    unless_event_type: list[str] | None = Field(
        default=None,
        description="Not eligible once any event of these types is known by the cutoff, e.g. [email_bounce, "
        "spam_complaint, unsubscribe] for an email action: engagement from an unreachable inbox is no signal.",
    )

    _types = field_validator("active_event_type", "unless_event_type", mode="before")(_as_list)


class Trigger(EventFilter):
    """One training/scoring row per trigger event, as of the moment it became visible (respond: a send).

    Features of ``kind: trigger`` read the trigger event's own fields (campaign id, type, offers, ...)."""


class Action(_Strict):
    """One predicted action. See the module docstring and ``docs/training.md``."""

    name: str = Field(
        description="The action's name (buy_7d); a template derives it from the template and horizon when absent."
    )
    template: ActionTemplate | None = Field(
        default=None,
        description="Start from a template (buy, upgrade, renew, respond, churn); keys written here override its defaults.",
    )
    description: str | None = Field(default=None, description="Free text shown in reports.")
    target: Target
    outcome: Literal["occurs", "absent"] = Field(
        default="occurs",
        description="occurs: 1 when a target event happens in the window; absent: when none does.",
    )
    horizon: FiniteDuration = Field(
        description="How long after the cutoff (+ gap) the window runs; with horizon_until, its longest length."
    )
    horizon_until: str | None = Field(
        default=None,
        description="A trigger action's window may end earlier, at a time or date held by this field of the "
        "trigger (written `horizon: until properties.end_date` with `max_horizon: 90d`). A date alone means "
        "the end of that day (its last microsecond) in the project's time zone; a missing or unreadable "
        "value leaves the cap.",
    )
    gap: FiniteDuration = Field(
        default_factory=lambda: Duration.parse("0s"),
        description="The label window is (t + gap, t + gap + horizon].",
    )
    label_delay: FiniteDuration = Field(
        default_factory=lambda: Duration.parse("0s"),
        description="How long after the window ends its events are all known; a row matures after that.",
    )
    eligibility: Eligibility = Field(default_factory=Eligibility)
    trigger: Trigger | None = None

    @model_validator(mode="before")
    @classmethod
    def _apply_template(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("template") is None:
            return data
        template = data["template"]
        if template not in TEMPLATES:
            return data  # the Literal check reports it
        merged = copy.deepcopy(TEMPLATES[template])
        merged.update(data)
        merged = _until(merged)
        if "name" not in merged:
            merged["name"] = f"{template}_{Duration.parse(merged['horizon'], allow_lifetime=False)}"
        return merged

    @model_validator(mode="before")
    @classmethod
    def _horizon_until(cls, data: Any) -> Any:
        return _until(data) if isinstance(data, dict) else data

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                f"{value!r} is not a valid action name; use lowercase letters, digits and underscores, "
                "starting with a letter (e.g. buy_7d)"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Action:
        if self.horizon.seconds == 0:
            raise ValueError("horizon must be longer than 0s, e.g. horizon: 7d")
        if self.target.same_campaign and self.trigger is None:
            raise ValueError("target.same_campaign needs a trigger (the event whose campaign is matched)")
        if self.horizon_until is not None:
            if self.trigger is None:
                raise ValueError(
                    "horizon: until <field> needs a trigger (the event whose field ends the window)"
                )
            field_kind(self.horizon_until)  # raises, naming the known fields
        return self

    @property
    def span(self) -> Duration:
        """From the cutoff to the moment the label is known: gap + horizon + label delay."""
        return Duration(self.gap.seconds + self.horizon.seconds + self.label_delay.seconds)

    @property
    def activity_types(self) -> list[str]:
        return self.eligibility.active_event_type or self.target.event_type

    def event_types(self) -> set[str]:
        """Every event type this action refers to (checked against the project's declared types)."""
        out = set(self.target.event_type)
        if self.eligibility.active_within is not None:
            out |= set(self.activity_types)
        if self.eligibility.due is not None:
            out |= set(self.eligibility.due.event_type)
        if self.trigger is not None:
            out |= set(self.trigger.event_type)
        if self.eligibility.unless_event_type:
            out |= set(self.eligibility.unless_event_type)
        return out

    def definition(self) -> dict[str, Any]:
        """The definition with templates resolved, as stored with training sets and bundles."""
        return self.model_dump(mode="json", by_alias=True, exclude={"description"})


_UNTIL = re.compile(r"^\s*until\s+(\S+)\s*$")


def _until(data: dict[str, Any]) -> dict[str, Any]:
    """``horizon: until <field>`` plus ``max_horizon: <cap>`` → ``horizon_until: <field>``, ``horizon: <cap>``."""
    horizon = data.get("horizon")
    m = _UNTIL.match(horizon) if isinstance(horizon, str) else None
    if m is None:
        if "max_horizon" in data:
            raise ValueError("max_horizon is the cap of `horizon: until <field>`; remove it or use that form")
        return data
    if "max_horizon" not in data:
        raise ValueError(
            f"horizon: {horizon!r} needs a cap, the longest window: add max_horizon (e.g. max_horizon: 90d)"
        )
    out = {k: v for k, v in data.items() if k != "max_horizon"}
    out["horizon"] = data["max_horizon"]
    out["horizon_until"] = m.group(1)
    return out


def check_actions(actions: list[Action], event_types: set[str]) -> list[tuple[tuple[int | str, ...], str]]:
    """Set-level problems: repeated names and unknown event types, as ``[(key path, message)]``."""
    problems: list[tuple[tuple[int | str, ...], str]] = []
    seen: set[str] = set()
    for i, action in enumerate(actions):
        if action.name in seen:
            problems.append(((i, "name"), f"{action.name!r} is already used by an earlier action"))
        seen.add(action.name)
        unknown = sorted(action.event_types() - event_types)
        if unknown:
            problems.append(
                (
                    (i,),
                    f"unknown event type(s) {', '.join(unknown)}; declare them in events.extra_types",
                )
            )
    return problems


# ------------------------------------------------------------------------------------------------ meaning
def _span(seconds: int) -> str:
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size:
            k = seconds // size
            return f"{k} {unit}{'s' if k != 1 else ''}"
    return f"{seconds} seconds"


def _either(types: Sequence[str], word: str) -> str:
    items = list(types)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {word} {items[-1]}"


def describe_action(action: Action, *, same_time: bool = True) -> str:
    """What a score of ``action`` means, in words: ``probability of at least one purchase within 7 days of
    scored_at`` (``same_time=False``: of as_of, for a run scored as of an earlier time)."""
    anchor = "scored_at" if same_time else "as_of"
    if action.trigger is not None:
        anchor = f"the {_either(action.trigger.event_type, 'or')} that made the customer eligible"
    h = _span(action.horizon.seconds)
    when = f"within {h} of {anchor}"
    if action.gap.seconds:
        when = f"between {_span(action.gap.seconds)} and {_span(action.gap.seconds + action.horizon.seconds)} after {anchor}"
    what = action.target.event_type
    where = f" where {action.target.where}" if action.target.where else ""
    same = " for the same campaign" if action.target.same_campaign else ""
    if action.outcome == "absent":
        return f"probability of no {_either(what, 'or')} event{where} {when}"
    return f"probability of at least one {_either(what, 'or')}{where}{same} {when}"
