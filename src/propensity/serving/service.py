"""The scoring service: features from the online store → the serving model → a response, in microseconds.

One object holds the online store, the current :class:`~propensity.scoring.model.ServingModel` and, optionally,
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

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from propensity.core.hashing import in_share
from propensity.scoring.model import RowEncoder, ServingModel
from propensity.serving.action_rules import PREFIX as RULE_PREFIX
from propensity.serving.action_rules import ActionRules
from propensity.serving.store import OnlineStore

DEFAULT_TTL = timedelta(minutes=15)
MAX_CUSTOMERS = 1000
CANARY_SALT = "canary"  # one salt for every candidate: a customer in the canary share stays in it


class FeatureInputError(ValueError):
    """Supplied features that do not fit the model's feature schema; ``problems`` lists each field's."""

    def __init__(self, message: str, problems: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.problems = problems


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
class _Plan:
    loaded: _Loaded | None
    wanted: list[str]
    # (action, eligibility decided by the rules, else this fixed value, model output index or -1: fallback,
    # why the fallback answers when it does)
    steps: tuple[tuple[str, bool, bool | None, int, str | None], ...]
    needs_model: bool


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
        clock: Callable[[], datetime] | None = None,
    ):
        self.store = store
        self.ttl = ttl
        self.rules = rules
        # What "now" is for a prediction: the wall clock, or a project's data clock (`clock: data`).
        self.now: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
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
        self._plans: dict[tuple[int, tuple[str, ...] | None], _Plan] = {}
        # Stores with asynchronous reads (Redis) are read without blocking the event loop, and apply events in a
        # worker thread; the in-process store is read and changed on the loop (it is not thread-safe).
        self._aread = getattr(store, "aread", None)
        self._aread_many = getattr(store, "aread_many", None)
        self._apply_blocks = bool(getattr(store, "apply_blocks", False))
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

    def _plan(self, loaded: _Loaded | None, actions: Sequence[str] | None) -> _Plan:
        """How to answer ``actions`` with ``loaded``, worked out once per (model, actions) and cached: for each
        action, whether the rules decide eligibility (else its fixed value) and which model output scores it
        (-1: the fallback)."""
        key = (id(loaded), tuple(actions) if actions else None)
        hit = self._plans.get(key)
        if hit is not None and hit.loaded is loaded:
            return hit
        wanted = self.resolve_actions(actions)
        rules, model = self.rules, None if loaded is None else loaded.model
        steps = []
        for name in wanted:
            covered = rules is not None and rules.covers(name)
            if covered or model is None or name not in model.actions:
                fixed = None
            else:
                fixed = True if model.actions[name].eligibility is None else None
            from_model = model is not None and loaded is not None and loaded.trusted and name in model.actions
            why = None
            if model is None or loaded is None:
                why = "no model in production: the rule-based fallback (recency and frequency tiers) answers"
            elif name not in model.actions:
                why = f"bundle {model.version} has no model for {name}: the rule-based fallback answers"
            elif not loaded.trusted:
                lacking = ", ".join(loaded.encoder.missing[:5])
                why = (f"bundle {model.version} needs features the project no longer declares ({lacking}): the "
                       "rule-based fallback answers until a model trained on the current features is promoted")  # fmt: skip
            steps.append(
                (name, covered, fixed, model.action_names.index(name) if from_model and model else -1, why)
            )
        plan = _Plan(loaded, wanted, tuple(steps), any(s[3] >= 0 for s in steps))
        if len(self._plans) > 1024:  # arbitrary `actions` lists must not grow this without bound
            self._plans.clear()
        self._plans[key] = plan
        return plan

    # ------------------------------------------------------------------------------------------ scoring
    def _scores(
        self, plan: _Plan, probs: Sequence[float] | None, vector: Sequence[Any], known: bool
    ) -> tuple[dict[str, dict[str, Any]], bool]:
        rules = self.rules
        values = {n: vector[i] for n, i in self._rule_pos.items()} if rules is not None else {}
        model = plan.loaded.model if plan.loaded is not None else None
        any_fallback = False
        out: dict[str, dict[str, Any]] = {}
        for name, covered, fixed, index, why in plan.steps:
            excluded = rules.excluded_by(name, values, known=known) if covered and rules is not None else None
            eligible = (excluded is None) if covered and rules is not None else fixed
            from_model = index >= 0 and probs is not None
            if eligible is False:
                # No score, and the rule that excluded the customer says why.
                out[name] = {"probability": None, "percentile": None, "segment": None, "eligible": False,
                             "fallback": not from_model, "reason": excluded}  # fmt: skip
                any_fallback |= not from_model
            elif from_model:
                assert model is not None and probs is not None
                p = float(probs[index])
                pct = model.percentile(index, p)
                out[name] = {"probability": p, "percentile": pct, "segment": model.segment(index, p),
                             "eligible": eligible, "fallback": False}  # fmt: skip
            else:
                assert rules is not None
                # Fallback scores are ranks by recency and frequency tiers, not calibrated: no percentile.
                out[name] = {"probability": rules.fallback(name, values), "percentile": None, "segment": None,
                             "eligible": eligible, "fallback": True, "reason": why}  # fmt: skip
                any_fallback = True
        return out, any_fallback

    def _body(
        self,
        customer_id: str,
        plan: _Plan,
        canary: bool,
        vector: Sequence[Any],
        known: bool,
        explain: bool,
        now: datetime,
        started: float,
    ) -> dict[str, Any]:
        """One customer's answer; ``scored_at`` and ``expiration_at`` as datetimes (see :meth:`predict`)."""
        loaded = plan.loaded
        row: list[float] | None = None
        probs: list[float] | None = None
        if plan.needs_model:
            assert loaded is not None
            row = loaded.encoder.encode(vector)
            probs = loaded.model.probabilities(row)
        scores, fallback = self._scores(plan, probs, vector, known)
        if explain and row is not None and loaded is not None:
            model = loaded.model
            explained = [
                a for a in plan.wanted if a in model.actions and scores[a]["probability"] is not None
            ]
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
            "scored_at": now,
            "expiration_at": now + self.ttl,
            "cold_start": not known,
            "fallback": fallback,
            "canary": canary,
            "scores": scores,
            "latency_ms": round((time.perf_counter() - started) * 1000.0, 4),
        }

    async def _read(self, customer_id: str, now: datetime) -> tuple[Sequence[Any], bool]:
        if self._aread is not None:
            return await self._aread(customer_id, now)
        return self.store.vector(customer_id, now), self.store.knows(customer_id)

    def predict(
        self, customer_id: str, actions: Sequence[str] | None = None, *, explain: bool = False
    ) -> dict[str, Any]:
        """The scores of one customer for the requested actions (all by default), with the response metadata
        (blocking: a Redis store's read waits here; the server uses :meth:`predict_json`)."""
        started = time.perf_counter()
        loaded, canary = self._route(customer_id)
        plan = self._plan(loaded, actions)
        now = self.now()
        vector = self.store.vector(customer_id, now)
        body = self._body(
            customer_id, plan, canary, vector, self.store.knows(customer_id), explain, now, started
        )
        body["scored_at"], body["expiration_at"] = _iso(now), _iso(body["expiration_at"])
        return body

    async def apredict(
        self, customer_id: str, actions: Sequence[str] | None = None, *, explain: bool = False
    ) -> dict[str, Any]:
        """:meth:`predict` without blocking the event loop on the store."""
        return orjson.loads(await self.predict_json(customer_id, actions, explain=explain))

    async def predict_json(
        self, customer_id: str, actions: Sequence[str] | None = None, *, explain: bool = False
    ) -> bytes:
        """:meth:`predict`'s answer as JSON bytes (one orjson call), reading the store asynchronously when it
        can (the Redis store): what ``GET /v1/predict`` sends."""
        started = time.perf_counter()
        loaded, canary = self._route(customer_id)
        plan = self._plan(loaded, actions)  # before the read: unknown actions fail without touching the store
        now = self.now()
        vector, known = await self._read(customer_id, now)
        body = self._body(customer_id, plan, canary, vector, known, explain, now, started)
        return orjson.dumps(body, option=orjson.OPT_UTC_Z)

    async def apply(self, events: pa.Table) -> int:
        """Apply events to the store; a store whose apply blocks on I/O (Redis) applies in a worker thread."""
        if self._apply_blocks:
            return await asyncio.to_thread(self.store.apply, events)
        return self.store.apply(events)

    async def apply_attributes(self, rows: Sequence[dict[str, Any]]) -> int:
        """Apply attribute versions to the store (in a worker thread where its apply blocks on I/O)."""
        if self._apply_blocks:
            return await asyncio.to_thread(self.store.apply_attributes, rows)
        return self.store.apply_attributes(rows)

    def predict_many(
        self, customer_ids: Sequence[str], actions: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Scores of up to :data:`MAX_CUSTOMERS` customers, one batch evaluation per bundle that answers."""
        started = time.perf_counter()
        self._check_many(customer_ids)
        now = self.now()
        vectors = self.store.vectors(customer_ids, now)
        known = [self.store.knows(c) for c in customer_ids]
        return self._many(customer_ids, actions, vectors, known, now, started)

    def predict_features(
        self,
        features: dict[str, Any],
        actions: Sequence[str] | None = None,
        *,
        customer_id: str | None = None,
    ) -> dict[str, Any]:
        """One row scored as given (``POST /v1/predict`` with ``features``): the production model's feature
        names → values, checked against its feature schema (a number for a numeric feature, text for a category,
        null for missing); unknown or mistyped fields raise :class:`FeatureInputError` naming each. Features not
        given are missing values (listed in the answer). Eligibility rules read the online store, so they are
        not applied to supplied rows (``eligible`` is null)."""
        started = time.perf_counter()
        wanted = self.resolve_actions(actions)
        model = self.model
        if model is None:
            raise NoModelError("no model is loaded; train one and promote it (`propensity models promote`)")
        kinds = {c: ("category" if v is not None else "number") for c, v in zip(model.columns, model.column_vocab, strict=True)}  # fmt: skip
        problems = []
        for name, value in features.items():
            kind = kinds.get(name)
            if kind is None:
                problems.append({"field": f"features.{name}", "message": "not a feature of the production "
                                 f"model {model.version} (its features: {', '.join(model.columns)})"})  # fmt: skip
            elif value is None:
                continue
            elif kind == "number" and not isinstance(value, int | float | bool):
                problems.append(
                    {"field": f"features.{name}", "message": f"a number is expected, got {value!r}"}
                )
            elif kind == "category" and not isinstance(value, str):
                problems.append({"field": f"features.{name}", "message": f"text (a category) is expected, got {value!r}"})  # fmt: skip
        if problems:
            raise FeatureInputError(
                "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5]), problems
            )
        names = list(features)
        row = model.encoder_for(names).encode([features[n] for n in names])
        probs = model.probabilities(row)
        scores: dict[str, dict[str, Any]] = {}
        for name in wanted:
            if name not in model.actions:
                scores[name] = {"probability": None, "percentile": None, "segment": None, "eligible": None,
                                "fallback": False}  # fmt: skip
                continue
            i = model.action_names.index(name)
            p = float(probs[i])
            scores[name] = {"probability": p, "percentile": model.percentile(i, p), "segment": model.segment(i, p),
                            "eligible": None, "fallback": False}  # fmt: skip
        now = datetime.now(UTC)
        # The batch answer's shape (one result), so the endpoint has one documented response.
        return {
            "model_version": model.version,
            "feature_set_version": model.feature_set_version,
            "scored_at": _iso(now),
            "expiration_at": _iso(now + self.ttl),
            "fallback": False,
            "canary": False,
            "results": [{"customer_id": customer_id or "", "cold_start": False, "scores": scores}],
            "features_supplied": True,
            "missing_features": [c for c in dict.fromkeys(model.columns) if c not in features],
            "latency_ms": round((time.perf_counter() - started) * 1000.0, 4),
        }

    async def apredict_many(
        self, customer_ids: Sequence[str], actions: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """:meth:`predict_many` reading the store asynchronously when it can (one pipelined round trip)."""
        started = time.perf_counter()
        self._check_many(customer_ids)
        self.resolve_actions(actions)
        now = self.now()
        if self._aread_many is not None:
            vectors, known = await self._aread_many(customer_ids, now)
        else:
            vectors = self.store.vectors(customer_ids, now)
            known = [self.store.knows(c) for c in customer_ids]
        return self._many(customer_ids, actions, vectors, known, now, started)

    @staticmethod
    def _check_many(customer_ids: Sequence[str]) -> None:
        if len(customer_ids) > MAX_CUSTOMERS:
            raise ValueError(
                f"customer_ids: at most {MAX_CUSTOMERS} customers per request, got {len(customer_ids)}"
            )

    def _many(
        self,
        customer_ids: Sequence[str],
        actions: Sequence[str] | None,
        vectors: Sequence[Sequence[Any]],
        known: Sequence[bool],
        now: datetime,
        started: float,
    ) -> dict[str, Any]:
        main = self._loaded
        routes = [self._route(c) for c in customer_ids]
        plans = {id(r[0]): self._plan(r[0], actions) for r in routes}
        probs: list[Sequence[float] | None] = [None] * len(customer_ids)
        for plan in plans.values():
            group = plan.loaded
            if group is None or not plan.needs_model:
                continue
            idx = [i for i, r in enumerate(routes) if r[0] is group]
            rows = np.array([group.encoder.encode(vectors[i]) for i in idx], dtype=np.float64).reshape(
                len(idx), len(group.model.columns) or 1
            )
            for i, p in zip(idx, group.model.probabilities_many(rows), strict=True):
                probs[i] = p
        results = []
        any_fallback = any_canary = False
        for cid, vector, is_known, (loaded, canary), p in zip(
            customer_ids, vectors, known, routes, probs, strict=True
        ):
            scores, fallback = self._scores(plans[id(loaded)], p, vector, is_known)
            any_fallback |= fallback
            any_canary |= canary
            result: dict[str, Any] = {"customer_id": cid, "cold_start": not is_known, "scores": scores}
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
