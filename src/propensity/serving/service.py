"""The scoring service: features from the online store → the serving model → a response, in microseconds.

One object holds the online store and the current :class:`~propensity.serving.model.ServingModel`. Swapping the
model replaces one reference: a request reads it once at its start, so in-flight requests finish on the model
they began with and none fails. Responses are plain dicts (the HTTP layer serialises them).

Flags: ``cold_start`` when the store has never seen the customer (scored on the empty feature vector, not an
error); ``fallback`` is false for every model score (the rule-based fallback is not served online yet);
``canary`` is false (no canary routing yet). ``eligible`` is ``true`` for actions without an eligibility rule and
``null`` (not evaluated online yet) for actions with one. With ``explain``, each score carries ``reason_codes``:
the three features that moved it most (path attributions in log-odds, with the feature's value).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from propensity.serving.model import RowEncoder, ServingModel, segment_of
from propensity.serving.store import OnlineStore

DEFAULT_TTL = timedelta(minutes=15)
MAX_CUSTOMERS = 1000


class UnknownActionError(ValueError):
    """An ``actions`` parameter naming an action the production model does not have."""


class NoModelError(RuntimeError):
    """No model is loaded (nothing promoted to production yet)."""


@dataclass(frozen=True)
class _Loaded:
    model: ServingModel
    encoder: RowEncoder


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


class ScoringService:
    """Scores customers from the online store with the current model; thread-safe model swaps."""

    def __init__(
        self, store: OnlineStore, model: ServingModel | None = None, *, ttl: timedelta = DEFAULT_TTL
    ):
        self.store = store
        self.ttl = ttl
        self._loaded: _Loaded | None = None
        if model is not None:
            self.swap(model)

    @property
    def model(self) -> ServingModel | None:
        loaded = self._loaded
        return None if loaded is None else loaded.model

    def swap(self, model: ServingModel) -> ServingModel | None:
        """Make ``model`` current (one reference assignment); returns the previous one."""
        previous = self.model
        self._loaded = _Loaded(model, model.encoder_for(self.store.feature_names))
        return previous

    def resolve_actions(self, actions: Sequence[str] | None) -> list[int]:
        """Indices of the requested actions in the current model (all when ``None``)."""
        loaded = self._loaded
        if loaded is None:
            raise NoModelError("no model is loaded; train one and promote it (`propensity models promote`)")
        names = loaded.model.action_names
        if not actions:
            return list(range(len(names)))
        out = []
        for a in actions:
            if a not in loaded.model.actions:
                raise UnknownActionError(f"unknown action {a!r}; this model scores: {', '.join(names)}")
            out.append(names.index(a))
        return out

    def predict(
        self, customer_id: str, actions: Sequence[str] | None = None, *, explain: bool = False
    ) -> dict[str, Any]:
        """The scores of one customer for the requested actions (all by default), with the response metadata."""
        started = time.perf_counter()
        loaded = self._loaded
        wanted = self.resolve_actions(actions)
        assert loaded is not None
        now = datetime.now(UTC)
        vector = self.store.vector(customer_id, now)
        cold = not self.store.knows(customer_id)
        row = loaded.encoder.encode(vector)
        probs = loaded.model.probabilities(row)
        scores = {}
        for i in wanted:
            scores[loaded.model.action_names[i]] = self._entry(loaded.model, i, probs[i], False)
        if explain:
            values = dict(zip(self.store.feature_names, vector, strict=True))
            for i, codes in zip(wanted, loaded.model.reason_codes(row, wanted), strict=True):
                for code in codes:
                    code["value"] = values.get(code["feature"])
                scores[loaded.model.action_names[i]]["reason_codes"] = codes
        return {
            "customer_id": customer_id,
            "model_version": loaded.model.version,
            "feature_set_version": loaded.model.feature_set_version,
            "scored_at": _iso(now),
            "expiration_at": _iso(now + self.ttl),
            "cold_start": cold,
            "fallback": False,
            "canary": False,
            "scores": scores,
            "latency_ms": round((time.perf_counter() - started) * 1000.0, 4),
        }

    def predict_many(
        self, customer_ids: Sequence[str], actions: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Scores of up to :data:`MAX_CUSTOMERS` customers in one batch evaluation."""
        started = time.perf_counter()
        if len(customer_ids) > MAX_CUSTOMERS:
            raise ValueError(
                f"customer_ids: at most {MAX_CUSTOMERS} customers per request, got {len(customer_ids)}"
            )
        loaded = self._loaded
        wanted = self.resolve_actions(actions)
        assert loaded is not None
        now = datetime.now(UTC)
        rows = np.array(
            [loaded.encoder.encode(self.store.vector(c, now)) for c in customer_ids], dtype=np.float64
        ).reshape(len(customer_ids), len(loaded.model.columns) or 1)
        probs = loaded.model.probabilities_many(rows)
        results = []
        for r, cid in enumerate(customer_ids):
            scores = {
                loaded.model.action_names[i]: self._entry(loaded.model, i, float(probs[r, i]), False)
                for i in wanted
            }
            results.append({"customer_id": cid, "cold_start": not self.store.knows(cid), "scores": scores})
        return {
            "model_version": loaded.model.version,
            "feature_set_version": loaded.model.feature_set_version,
            "scored_at": _iso(now),
            "expiration_at": _iso(now + self.ttl),
            "fallback": False,
            "canary": False,
            "results": results,
            "latency_ms": round((time.perf_counter() - started) * 1000.0, 4),
        }

    @staticmethod
    def _entry(model: ServingModel, i: int, p: float, _explain: bool) -> dict[str, Any]:
        action = model.actions[model.action_names[i]]
        pct = model.percentile(i, p)
        entry: dict[str, Any] = {
            "probability": p,
            "percentile": pct,
            "segment": segment_of(pct),
            "eligible": True if action.eligibility is None else None,
        }
        return entry
