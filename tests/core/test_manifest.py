"""The typed bundle manifest keeps the on-disk JSON and the ids of bundles written before it existed."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from propensity.config.features import feature_set_version
from propensity.core.hashing import content_hash
from propensity.core.manifest import BundleManifest, bundle_id
from propensity.features import parse_features
from propensity.registry.bundle import CorruptBundleError, read_manifest

MANIFEST: dict[str, Any] = {
    "id": "m-placeholder",
    "created_at": "2026-03-01T12:00:00+00:00",
    "format": 1,
    "project": "demo",
    "feature_set_version": "fs-0123456789abcdef",
    "features": [{"name": "views_7d", "aggregate": "count", "window": "7d"}],
    "training_set": "ts-0123456789abcdef",
    "data": {"first_event_time": "2025-01-01T00:00:00+00:00"},
    "seed": 7,
    "code_version": "0.1.0+abc",
    "actions": {
        "buy_7d": {
            "definition": {"name": "buy_7d", "horizon": "7d"},
            "feature_order": ["views_7d"],
            "training_window": {"first_cutoff": "2025-02-01T00:00:00+00:00"},
            "counts": {"train": 10},
            "calibration": {"model": {"method": "platt"}},
            "metrics": {"model": {"roc_auc": 0.8}},
            "oracle": None,
            "importance": [],
            "reason_code_examples": [],
            "score_quantiles": [0.0, 0.5, 1.0],
            "a_key_from_a_later_version": {"x": 1},
        }
    },
    "files": {"buy_7d/model.txt": "ab" * 32},
}


def _old_bundle_id(manifest: dict[str, Any]) -> str:
    """The id rule as registry/bundle.py wrote it before the manifest was typed."""
    body = {k: v for k, v in manifest.items() if k not in ("id", "created_at")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return "m-" + hashlib.sha256(canonical).hexdigest()[:16]


def test_ids_of_existing_bundles_are_unchanged() -> None:
    assert bundle_id(MANIFEST) == _old_bundle_id(MANIFEST)
    manifest = BundleManifest.from_json({**MANIFEST, "id": _old_bundle_id(MANIFEST)})
    assert manifest.content_id() == manifest.id


def test_feature_set_versions_are_unchanged() -> None:
    features = parse_features(
        [{"name": "views_7d", "aggregate": "count", "event_type": "page_view", "window": "7d"}]
    )
    old = json.dumps([f.canonical() for f in features], sort_keys=True, separators=(",", ":"))
    assert feature_set_version(features) == "fs-" + hashlib.sha256(old.encode()).hexdigest()[:16]
    assert feature_set_version(features) == "fs-" + content_hash([f.canonical() for f in features])


def test_the_json_round_trips_with_unknown_keys(tmp_path: Path) -> None:
    (tmp_path / "bundle.json").write_text(json.dumps({**MANIFEST, "added_later": [1, 2]}))
    manifest = read_manifest(tmp_path)
    assert manifest.to_json() == {**MANIFEST, "added_later": [1, 2]}
    info = manifest.actions["buy_7d"]
    assert (info.score_quantiles, info.metrics["model"]["roc_auc"], info.feature_order) == ([0.0, 0.5, 1.0], 0.8,
                                                                                          ["views_7d"])  # fmt: skip


@pytest.mark.parametrize(
    ("text", "message"),
    [("[1, 2]", "not a JSON object"), ('{"actions": {}}', "id: Field required"), ("{", "not valid JSON")],
)
def test_a_manifest_that_is_not_one_is_a_corrupt_bundle(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bundle.json").write_text(text)
    with pytest.raises(CorruptBundleError, match=message):
        read_manifest(tmp_path)
