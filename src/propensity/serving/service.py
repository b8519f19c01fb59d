"""The scoring service: features from the online store → the serving model → a response, in microseconds.

One object holds the online store, the current :class:`~propensity.serving.model.ServingModel` and, optionally,
a canary model. Swapping a model replaces one reference: a request reads it once at its start, so in-flight
requests finish on the model they began with and none fails. Responses are plain dicts (the HTTP layer
serialises them).

Per action, a response entry carries the calibrated ``probability``, its ``percentile`` and ``segment``, and
``eligible``. An ineligible customer gets no score for that action (``probability`` null, ``eligible`` false),
never a meaningless one. Eligibility is evaluated online by :class:`~propensity.serving.action_rules.ActionRules`
from features the store keeps for the purpose; an action the rules do not cover reports ``eligible: true`` when it
has no conditions and ``null`` (not evaluated) otherwise.

Flags: ``cold_start`` when the store has never seen the customer (scored on the empty feature vector, not an
error); ``fallback`` when a score comes from the rule-based fallback (:mod:`propensity.scoring.fallback`): the
action has no model in the served bundle, or the bundle needs features the online store does not compute (its
scores would be meaningless); ``canary`` when the customer falls in the canary share and was scored by the
candidate bundle (``model_version`` says which bundle answered). With ``explain``, each model score carries
``reason_codes``: the three features that moved it most (path attributions in log-odds, with the feature's value).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from propensity.hashing import in_share
from propensity.serving.action_rules import PREFIX as RULE_PREFIX
from propensity.serving.action_rules import ActionRules
from propensity.serving.model import RowEncoder, ServingModel, segment_of
from propensity.serving.store import OnlineStore

DEFAULT_TTL = timedelta(minutes=15)
MAX_CUSTOMERS = 1000
CANARY_SALT = "canary"  # one salt for every candidate: a customer in the canary share stays in it


class UnknownActionError(ValueError):
    """An ``actions`` parameter naming an action that is neither in the served model nor declared."""


class NoModelError(RuntimeError):
    """No model is loaded (nothing promoted to production yet) and no declared action can fall back."""


@dataclass(frozen=True)
class _Loaded:
    model: ServingModel
    encoder: RowEncoder
    # False when the model needs features the store does not compute: its scores would be meaningless, so
    # every action falls back to the rules.
    trusted: bool


@dataclass(frozen=True)
class Canary:
    loaded: _Loaded
    share: float


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


class ScoringService:
    """Scores customers from the online store with the current model; thread-safe model swaps."""

    def __init__(
        self,
        store: OnlineStore,
        model: ServingModel | None = None,
        *,
        ttl: timedelta = DEFAULT_TTL,
        rules: ActionRules | None = None,
    ):
        self.store = store
        self.ttl = ttl
        self.rules = rules
        names = store.feature_names
        self._rule_pos = {n: i for i, n in enumerate(names) if n.startswith(RULE_PREFIX)}
        if rules is not None:
            lacking = [f.name for f in rules.features if f.name not in self._rule_pos]
            if lacking:
                raise ValueError(
                    f"the online store does not compute the rule features {', '.join(lacking[:5])}; "
                    "build it with the project's features plus ActionRules.features"
                )
        self._loaded: _Loaded | None = None
        self._canary: Canary | None = None
        if model is not None:
            self.swap(model)

    # ------------------------------------------------------------------------------------------ models
    def _load(self, model: ServingModel) -> _Loaded:
        encoder = model.encoder_for(self.store.feature_names)
        return _Loaded(model, encoder, trusted=not encoder.missing)

    @property
    def model(self) -> ServingModel | None:
        loaded = self._loaded
        return None if loaded is None else loaded.model

    @property
    def canary(self) -> Canary | None:
        return self._canary

    def swap(self, model: ServingModel) -> ServingModel | None:
        """Make ``model`` current (one reference assignment); returns the previous one."""
        previous = self.model
        self._loaded = self._load(model)
        return previous

    def set_canary(self, model: ServingModel | None, share: float = 0.0) -> None:
        """Route ``share`` (0–1) of customers, by a hash of their id, to ``model``; None or 0 stops the canary."""
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"canary share must be between 0 and 1, got {share}")
        self._canary = None if model is None or share == 0.0 else Canary(self._load(model), share)

    def _route(self, customer_id: str) -> tuple[_Loaded | None, bool]:
        canary = self._canary
        if canary is not None and in_share(customer_id, CANARY_SALT, canary.share):
            return canary.loaded, True
        return self._loaded, False

    # ------------------------------------------------------------------------------------------ actions
    def action_names(self) -> list[str]:
        """Every action this service can answer: the model's, then declared ones served by the fallback."""
        loaded = self._loaded
        names = list(loaded.model.action_names) if loaded is not None else []
        if self.rules is not None:
            names += [a for a in self.rules.actions if a not in names]
        return names

    def resolve_actions(self, actions: Sequence[str] | None) -> list[str]:
        """The requested action names, checked (all when ``None`` or empty)."""
        known = self.action_names()
        if not known:
            raise NoModelError("no model is loaded; train one and promote it (`propensity models promote`)")
        if not actions:
            return known
        for a in actions:
            if a not in known:
                raise UnknownActionError(f"unknown action {a!r}; this server scores: {', '.join(known)}")
        return list(dict.fromkeys(actions))

    # ------------------------------------------------------------------------------------------ scoring
    def _scores(
        self,
        loaded: _Loaded | None,
        wanted: Sequence[str],
        probs: Sequence[float] | None,
        vector: Sequence[Any],
        known: bool,
    ) -> tuple[dict[str, dict[str, Any]], bool]:
        rules = self.rules
        values = {n: vector[i] for n, i in self._rule_pos.items()}
        model = loaded.model if loaded is not None else None
        any_fallback = False
        out: dict[str, dict[str, Any]] = {}
        for name in wanted:
            if rules is not None and rules.covers(name):
                eligible: bool | None = rules.eligible(name, values, known=known)
            elif model is not None and name in model.actions:
                eligible = True if model.actions[name].eligibility is None else None
            else:
                eligible = None
            from_model = (
                model is not None and probs is not None and name in model.actions and loaded is not None
                and loaded.trusted
            )  # fmt: skip
            if eligible is False:
                out[name] = {"probability": None, "percentile": None, "segment": None, "eligible": False,
                             "fallback": not from_model}  # fmt: skip
                any_fallback |= not from_model
                continue
            if from_model:
                assert model is not None and probs is not None
                i = model.action_names.index(name)
                p = float(probs[i])
                pct = model.percentile(i, p)
                out[name] = {"probability": p, "percentile": pct, "segment": segment_of(pct),
                             "eligible": eligible, "fallback": False}  # fmt: skip
            else:
                assert rules is not None
                # Fallback scores are ranks by recency and frequency tiers, not calibrated: no percentile.
                out[name] = {"probability": rules.fallback(name, values), "percentile": None, "segment": None,
                             "eligible": eligible, "fallback": True}  # fmt: skip
                any_fallback = True
        return out, any_fallback

    def _needs_model(self, loaded: _Loaded | None, wanted: Sequence[str]) -> bool:
        return loaded is not None and loaded.trusted and any(a in loaded.model.actions for a in wanted)

    def predict(
        self, customer_id: str, actions: Sequence[str] | None = None, *, explain: bool = False
    ) -> dict[str, Any]:
        """The scores of one customer for the requested actions (all by default), with the response metadata."""
        started = time.perf_counter()
        wanted = self.resolve_actions(actions)
        loaded, canary = self._route(customer_id)
        now = datetime.now(UTC)
        vector = self.store.vector(customer_id, now)
        known = self.store.knows(customer_id)
        row: list[float] | None = None
        probs: list[float] | None = None
        if self._needs_model(loaded, wanted):
            assert loaded is not None
            row = loaded.encoder.encode(vector)
            probs = loaded.model.probabilities(row)
        scores, fallback = self._scores(loaded, wanted, probs, vector, known)
        if explain and row is not None and loaded is not None:
            model = loaded.model
            explained = [a for a in wanted if a in model.actions and scores[a]["probability"] is not None]
            values = dict(zip(self.store.feature_names, vector, strict=True))
            indices = [model.action_names.index(a) for a in explained]
            for name, codes in zip(explained, model.reason_codes(row, indices), strict=True):
                for code in codes:
                    code["value"] = values.get(code["feature"])
                scores[name]["reason_codes"] = codes
        return {
            "customer_id": customer_id,
            "model_version": None if loaded is None else loaded.model.version,
            "feature_set_version": None if loaded is None else loaded.model.feature_set_version,
            "scored_at": _iso(now),
            "expiration_at": _iso(now + self.ttl),
            "cold_start": not known,
            "fallback": fallback,
            "canary": canary,
            "scores": scores,
            "latency_ms": round((time.perf_counter() - started) * 1000.0, 4),
        }

    def predict_many(
        self, customer_ids: Sequence[str], actions: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Scores of up to :data:`MAX_CUSTOMERS` customers, one batch evaluation per bundle that answers."""
        started = time.perf_counter()
        if len(customer_ids) > MAX_CUSTOMERS:
            raise ValueError(
                f"customer_ids: at most {MAX_CUSTOMERS} customers per request, got {len(customer_ids)}"
            )
        wanted = self.resolve_actions(actions)
        now = datetime.now(UTC)
        main = self._loaded
        vectors = self.store.vectors(customer_ids, now)
        routes = [self._route(c) for c in customer_ids]
        probs: list[Sequence[float] | None] = [None] * len(customer_ids)
        for group in {id(r[0]): r[0] for r in routes if r[0] is not None}.values():
            if not self._needs_model(group, wanted):
                continue
            idx = [i for i, r in enumerate(routes) if r[0] is group]
            rows = np.array([group.encoder.encode(vectors[i]) for i in idx], dtype=np.float64).reshape(
                len(idx), len(group.model.columns) or 1
            )
            for i, p in zip(idx, group.model.probabilities_many(rows), strict=True):
                probs[i] = p
        results = []
        any_fallback = any_canary = False
        for cid, vector, (loaded, canary), p in zip(customer_ids, vectors, routes, probs, strict=True):
            known = self.store.knows(cid)
            scores, fallback = self._scores(loaded, wanted, p, vector, known)
            any_fallback |= fallback
            any_canary |= canary
            result: dict[str, Any] = {"customer_id": cid, "cold_start": not known, "scores": scores}
            if canary:
                assert loaded is not None
                result["canary"] = True
                result["model_version"] = loaded.model.version
            results.append(result)
        return {
            "model_version": None if main is None else main.model.version,
            "feature_set_version": None if main is None else main.model.feature_set_version,
            "scored_at": _iso(now),
            "expiration_at": _iso(now + self.ttl),
            "fallback": any_fallback,
            "canary": any_canary,
            "results": results,
            "latency_ms": round((time.perf_counter() - started) * 1000.0, 4),
        }
