"""Eligibility and the rule-based fallback, evaluated online from a few extra features the online store keeps.

Training decides eligibility in SQL (:mod:`propensity.labels.labels`); serving must answer the same question in
microseconds, from state it already maintains. So each action's rules become ordinary feature definitions that
the online engine computes alongside the project's features (with exact windows, matching the SQL's boundaries):

- ``active_within: d`` → a count of activity events in ``(t − d, t]``; eligible when it is positive;
- ``due: {event_type, cycle}`` → a billing event in ``(t − cycle + gap, t − cycle + gap + horizon]``: a count over
  the window ``cycle − gap`` minus one over ``cycle − gap − horizon`` (when that is positive);
- ``attribute: {name, in | not_in}`` → the attribute as of t (a missing value is never eligible);
- ``unless_event_type`` → a lifetime count of those events (a bounce, an unsubscribe); not eligible when positive;
- a ``trigger`` (respond: a campaign send) → a trigger event in the last ``gap + horizon``: the customer's response
  window is still open;
- the fallback (:mod:`propensity.scoring.fallback`) → days since the last target event (activity events for
  ``outcome: absent``) and their count in the last 90 days.

An unknown customer (cold start) is eligible only for actions without conditions. These features are named
``rule__<action>__<part>`` and are never model inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from propensity.config.actions import Action
from propensity.config.durations import Duration
from propensity.config.features import AggregateFeature, AnyFeature, AttributeFeature
from propensity.scoring.fallback import fallback_score

PREFIX = "rule__"


def _types(types: Sequence[str]) -> str:
    return " or ".join(types)


_DAY = 86_400.0


def _count(name: str, types: Sequence[str], seconds: int, where: str | None = None) -> AggregateFeature:
    return AggregateFeature(
        name=name,
        aggregate="count",
        event_type=list(types),
        where=where,
        window=f"{seconds}s",
        bucket="exact",
    )


@dataclass(frozen=True)
class _Rules:
    active: str | None = None
    due_outer: str | None = None
    due_inner: str | None = None
    due_never: bool = False
    attribute: str | None = None
    attribute_in: frozenset[str] | None = None
    attribute_not_in: frozenset[str] | None = None
    trigger: str | None = None
    unless: str | None = None
    since_last: str = ""
    count_90d: str = ""

    @property
    def conditional(self) -> bool:
        return any(
            (self.active, self.due_outer, self.due_never, self.attribute, self.trigger),
        )


class ActionRules:
    """Online eligibility and fallback scores for a set of actions.

    ``features`` are the extra definitions to add to the online store; ``eligible`` and ``fallback`` read their
    values from the customer's feature dict (the store's ``feature_names`` zipped with its vector).
    """

    def __init__(self, actions: Iterable[Action]) -> None:
        self.actions: dict[str, Action] = {}
        self._rules: dict[str, _Rules] = {}
        features: list[AnyFeature] = []
        for action in actions:
            if action.name in self.actions:
                continue
            self.actions[action.name] = action
            rules, extra = self._compile(action)
            self._rules[action.name] = rules
            features.extend(extra)
        self.features: list[AnyFeature] = features

    @staticmethod
    def _compile(action: Action) -> tuple[_Rules, list[AnyFeature]]:
        p = f"{PREFIX}{action.name}__"
        out: list[AnyFeature] = []
        fields: dict[str, Any] = {}
        elig = action.eligibility
        if elig.active_within is not None:
            if elig.active_within.is_lifetime:
                out.append(
                    AggregateFeature(
                        name=p + "active", aggregate="count", event_type=list(action.activity_types),
                        window="lifetime",
                    )
                )  # fmt: skip
            else:
                out.append(_count(p + "active", action.activity_types, elig.active_within.seconds))
            fields["active"] = p + "active"
        if elig.due is not None:
            gap, h, cycle = action.gap.seconds, action.horizon.seconds, elig.due.cycle.seconds
            hi, lo = cycle - gap, cycle - gap - h
            if hi <= 0:
                fields["due_never"] = True
            else:
                out.append(_count(p + "due_outer", elig.due.event_type, hi))
                fields["due_outer"] = p + "due_outer"
                if lo > 0:
                    out.append(_count(p + "due_inner", elig.due.event_type, lo))
                    fields["due_inner"] = p + "due_inner"
        if elig.attribute is not None:
            out.append(
                AttributeFeature(name=p + "attribute", kind="attribute", attribute=elig.attribute.name)
            )
            fields["attribute"] = p + "attribute"
            if elig.attribute.in_ is not None:
                fields["attribute_in"] = frozenset(elig.attribute.in_)
            if elig.attribute.not_in is not None:
                fields["attribute_not_in"] = frozenset(elig.attribute.not_in)
        if elig.unless_event_type:
            out.append(
                AggregateFeature(
                    name=p + "unless", aggregate="count", event_type=list(elig.unless_event_type),
                    window="lifetime",
                )
            )  # fmt: skip
            fields["unless"] = p + "unless"
        if action.trigger is not None:
            span = action.gap.seconds + action.horizon.seconds
            out.append(_count(p + "trigger", action.trigger.event_type, span, action.trigger.where))
            fields["trigger"] = p + "trigger"
        absent = action.outcome == "absent"
        types = action.activity_types if absent else action.target.event_type
        where = None if absent else action.target.where
        out.append(
            AggregateFeature(
                name=p + "since_last", aggregate="time_since_last", event_type=list(types), where=where,
                window="lifetime",
            )
        )  # fmt: skip
        out.append(_count(p + "count_90d", types, 90 * 86_400, where))
        return _Rules(since_last=p + "since_last", count_90d=p + "count_90d", **fields), out

    def covers(self, action: str) -> bool:
        return action in self._rules

    def eligible(self, action: str, values: Mapping[str, Any], *, known: bool) -> bool | None:
        """Whether the customer is eligible for ``action`` now; None if the action has no rules here."""
        r = self._rules.get(action)
        if r is None:
            return None
        return self.excluded_by(action, values, known=known) is None

    def excluded_by(self, action: str, values: Mapping[str, Any], *, known: bool) -> str | None:
        """The rule that makes the customer ineligible for ``action`` now, in words naming its key in
        propensity.yaml; None when eligible (or the action has no rules here)."""
        r = self._rules.get(action)
        if r is None:
            return None
        a = self.actions[action]
        elig = a.eligibility
        if r.unless is not None and values.get(r.unless):
            return f"eligibility.unless_event_type: a {_types(elig.unless_event_type or [])} event is known"
        if not r.conditional:
            return None
        if r.due_never:
            return (f"eligibility.due: a {elig.due.cycle if elig.due else ''} cycle can never fall due within the "
                    "label window (gap + horizon); no customer is eligible")  # fmt: skip
        if not known:
            return "unknown customer (no events or attributes yet): the eligibility rules need history"
        if r.active is not None and not values.get(r.active):
            return (
                f"eligibility.active_within: no {_types(a.activity_types)} in the last {elig.active_within}"
            )
        if r.due_outer is not None:
            inside = (values.get(r.due_outer) or 0) - (values.get(r.due_inner) or 0 if r.due_inner else 0)
            if inside <= 0:
                assert elig.due is not None
                return (f"eligibility.due: no {_types(elig.due.event_type)} whose {elig.due.cycle} cycle falls due "
                        f"within the next {a.horizon}")  # fmt: skip
        if r.attribute is not None:
            assert elig.attribute is not None
            value = values.get(r.attribute)
            name = elig.attribute.name
            if value is None:
                return f"eligibility.attribute: {name} is unknown for this customer"
            if r.attribute_in is not None and value not in r.attribute_in:
                return f"eligibility.attribute: {name} is {value!r}, not one of {', '.join(sorted(r.attribute_in))}"
            if r.attribute_not_in is not None and value in r.attribute_not_in:
                return f"eligibility.attribute: {name} is {value!r}, which not_in excludes"
        if r.trigger is not None and not values.get(r.trigger):
            assert a.trigger is not None
            span = Duration(a.gap.seconds + a.horizon.seconds)
            return (f"trigger: no {_types(a.trigger.event_type)} in the last {span}, so no response window is "
                    "open")  # fmt: skip
        return None

    def fallback(self, action: str, values: Mapping[str, Any]) -> float:
        """The rule-based fallback score of ``action`` from the customer's recency and frequency."""
        r = self._rules[action]
        seconds = values.get(r.since_last)
        days = None if seconds is None else float(seconds) / _DAY
        return fallback_score(
            self.actions[action], days_since_last=days, count_90d=int(values.get(r.count_90d) or 0)
        ).score
