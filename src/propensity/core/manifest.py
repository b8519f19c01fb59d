"""The bundle manifest (``bundle.json``): the central shared type between training, the registry, scoring,
serving, monitoring, activation and retraining.

A manifest says what a bundle holds: per action its definition as trained, feature order, training window,
counts, calibration choice, metrics, importance and test-score quantiles; for the bundle, the project, the
feature set (version and canonical definitions), the training set, the data range, the seed, the code version and
every file's SHA-256. The JSON on disk is unchanged by this model: unknown keys are kept (``extra="allow"``), and
the bundle id is the content hash of the JSON as written (creation time aside), so a bundle written by any
version of propensity verifies and loads.

>>> m = BundleManifest.from_json({"id": "m-1", "feature_set_version": "fs-1", "future_key": 1,
...                               "actions": {"buy_7d": {"score_quantiles": [0.0, 1.0], "metrics": {}}}})
>>> m.id, m.feature_set_version, m.actions["buy_7d"].score_quantiles, m.to_json()["future_key"]
('m-1', 'fs-1', [0.0, 1.0], 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from propensity.core.hashing import content_hash

# 1: LightGBM only; 2: a model kind per action (model.json), the evaluation procedure under evaluation/.
FORMAT_VERSION = 2


class ActionManifest(BaseModel):
    """One action's entry in ``actions``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    # The action's full definition as trained (templates resolved); absent in bundles that predate it.
    definition: dict[str, Any] | None = None
    feature_order: list[str] = Field(default_factory=list)
    # first_cutoff, last_cutoff and the split boundaries (ISO 8601 strings).
    training_window: dict[str, Any] = Field(default_factory=dict)
    counts: dict[str, Any] = Field(default_factory=dict)
    # Per model ("model", "baseline"): the chosen calibration method and its candidates' scores.
    calibration: dict[str, Any] = Field(default_factory=dict)
    # Per model ("model", "baseline"): roc_auc, ece, deciles, lift_top_decile, base_rate, n, ...
    metrics: dict[str, Any] = Field(default_factory=dict)
    oracle: dict[str, Any] | None = None
    importance: list[dict[str, Any]] = Field(default_factory=list)
    reason_code_examples: list[Any] = Field(default_factory=list)
    # 101 quantiles of the calibrated test-split scores: percentiles and reference segments online.
    score_quantiles: list[float] | None = None
    # The served model: {"kind": "linear" | "lightgbm" | "blend", ...}; absent in format-1 bundles (LightGBM).
    model: dict[str, Any] | None = None
    # Why the champion won (its candidate name, the margin, the plain logistic reference).
    champion: dict[str, Any] | None = None
    # Every candidate with its calibration and validation figures.
    candidates: list[dict[str, Any]] = Field(default_factory=list)
    # Rows, positives, cutoffs and as_of range each stage used (evaluation, champion selection, served refit).
    stages: dict[str, Any] | None = None
    # The rolling-origin backtest of the refit procedure.
    backtest: dict[str, Any] | None = None
    # What `train` warned about (few rows training, rows purged).
    warnings: list[str] = Field(default_factory=list)

    @property
    def model_kind(self) -> str:
        """The served model's kind (``lightgbm`` for format-1 bundles)."""
        return str((self.model or {}).get("kind", "lightgbm"))


class BundleManifest(BaseModel):
    """A bundle's ``bundle.json``, typed. Build it with :meth:`from_json`; :meth:`to_json` gives the JSON back
    exactly as it was read."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: str
    created_at: str | None = None
    format: int = FORMAT_VERSION
    project: str | None = None
    feature_set_version: str = ""
    # The feature definitions the bundle was trained on, in canonical form.
    features: list[dict[str, Any]] = Field(default_factory=list)
    training_set: str | None = None
    data: dict[str, Any] | None = None
    seed: int | None = None
    code_version: str | None = None
    actions: dict[str, ActionManifest] = Field(default_factory=dict)
    # Relative path → SHA-256 of every file of the bundle.
    files: dict[str, str] = Field(default_factory=dict)

    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BundleManifest:
        """Validate the JSON of a manifest (raises pydantic's ValidationError naming the bad key)."""
        manifest = cls.model_validate(dict(data))
        manifest._raw = dict(data)
        return manifest

    def to_json(self) -> dict[str, Any]:
        """The manifest as JSON: what was read, unchanged (unknown keys included)."""
        return dict(self._raw) if self._raw else self.model_dump(mode="json", exclude_unset=True)

    def content_id(self) -> str:
        """The id this manifest's content gives (see :func:`bundle_id`); equals ``id`` unless it was edited."""
        return bundle_id(self.to_json())


def bundle_id(manifest: Mapping[str, Any]) -> str:
    """A bundle's id: ``m-`` and the content hash of its manifest JSON, ``id`` and ``created_at`` left out, so
    the same training produces the same id."""
    return "m-" + content_hash({k: v for k, v in manifest.items() if k not in ("id", "created_at")})
