"""Model bundles: every action's model, calibrator, feature order and metrics, immutable and content-addressed.

A bundle is a folder ``.propensity/models/<id>/`` holding ``bundle.json`` (the manifest) and, per action:
``model.json`` (the served model's kind: ``linear``, ``lightgbm`` or ``blend``, and a blend's weights),
``model.txt`` (LightGBM's text format; LightGBM and blends), ``linear.json`` (the linear model's knots, values
and slopes; linear and blends), ``calibrator.json``, ``encoder.json`` (feature order and category
vocabularies), ``baseline.json`` and ``baseline_calibrator.json`` (the plain logistic regression it was compared
with), and ``evaluation/`` (the same procedure fitted as of the test split's first cutoff: what the test metrics
score, and what the promotion gate and retraining compare on later windows). Nothing is pickled. A bundle of
format 1 (LightGBM only, no ``model.json`` or ``evaluation/``) still loads. The manifest lists every file's
SHA-256 and the id is a hash of the manifest's content (creation time aside), so the same training produces the
same id, and any changed byte is detected: :func:`load_bundle` verifies everything and refuses a corrupted
bundle with :class:`CorruptBundleError`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import ValidationError

from propensity.core.errors import PropensityError
from propensity.core.hashing import digest
from propensity.core.manifest import FORMAT_VERSION, BundleManifest, bundle_id
from propensity.core.version import __version__
from propensity.training.artifacts import ActionArtifacts
from propensity.training.calibration import Calibrator
from propensity.training.encoding import FeatureEncoder
from propensity.training.trainers import LogisticBaseline, ServedModel

MANIFEST = "bundle.json"


class CorruptBundleError(PropensityError):
    """A bundle's files do not match its manifest (edited, truncated or missing)."""


class BundleNotFoundError(PropensityError):
    """No bundle with that id (or prefix) in the workspace."""


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode("utf-8")


def code_version() -> str:
    """The package version plus the git commit when running from a checkout (best effort)."""
    head = Path(__file__).resolve().parents[3] / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        commit = (head.parent / ref[5:]).read_text().strip() if ref.startswith("ref: ") else ref
        return f"{__version__}+{commit[:12]}"
    except OSError:
        return __version__


def _files_for(art: ActionArtifacts) -> dict[str, bytes]:
    files = {
        **art.model.files(),
        "calibrator.json": _canonical(art.calibrator.to_json()),
        "baseline.json": _canonical(art.baseline.to_json()),
        "baseline_calibrator.json": _canonical(art.baseline_calibrator.to_json()),
        "encoder.json": _canonical(art.encoder.to_json()),
    }
    if art.evaluation is not None:
        model, cal = art.evaluation
        files.update({f"evaluation/{k}": v for k, v in model.files().items()})
        files["evaluation/calibrator.json"] = _canonical(cal.to_json())
    return files


def write_bundle(models_dir: Path, actions: dict[str, ActionArtifacts], meta: dict[str, Any]) -> str:
    """Write a bundle atomically (temp folder, then rename) and return its id; an identical one is reused."""
    files: dict[str, bytes] = {}
    for name, art in actions.items():
        for fname, data in _files_for(art).items():
            files[f"{name}/{fname}"] = data
    manifest: dict[str, Any] = {
        "format": FORMAT_VERSION,
        **meta,
        "code_version": meta.get("code_version", code_version()),
        "actions": {name: art.info for name, art in sorted(actions.items())},
        "files": {path: digest(data) for path, data in sorted(files.items())},
    }
    new_id = bundle_id(manifest)
    manifest = {"id": new_id, "created_at": datetime.now(UTC).isoformat(), **manifest}
    models_dir.mkdir(parents=True, exist_ok=True)
    final = models_dir / new_id
    if final.exists():
        return new_id
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=models_dir))
    try:
        for path, data in files.items():
            (tmp / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp / path).write_bytes(data)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        for p in tmp.rglob("*"):
            if p.is_file():
                p.chmod(0o444)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return new_id


@dataclass
class Bundle:
    """A verified, loaded bundle. ``predict`` scores a table of feature columns for one action."""

    id: str
    path: Path
    manifest: BundleManifest
    actions: dict[str, ActionArtifacts]

    def predict(
        self, action: str, table: pa.Table, *, baseline: bool = False, evaluation: bool = False
    ) -> np.ndarray:
        """Calibrated scores of ``action`` for a table of feature columns: the served model's, the baseline's,
        or (``evaluation``) the procedure's as of the test split, when the bundle has it (else the served)."""
        art = self.actions[action]
        x = art.encoder.matrix(table)
        if baseline:
            return art.baseline_calibrator(art.baseline.raw(x, art.encoder))
        if evaluation and art.evaluation is not None:
            model, cal = art.evaluation
            return cal(model.raw(x))
        return art.calibrator(art.model.raw(x))

    def has_evaluation(self, action: str) -> bool:
        return self.actions[action].evaluation is not None

    def reason_codes(self, action: str, table: pa.Table, *, top: int = 3) -> list[list[dict[str, Any]]]:
        """Each row's top contributing features with direction (see :func:`~propensity.training.explain.reason_codes`)."""
        from propensity.training.explain import reason_codes

        art = self.actions[action]
        return reason_codes(art.model, art.encoder.matrix(table), art.encoder.names, top=top)

    @property
    def feature_set_version(self) -> str:
        return self.manifest.feature_set_version


def read_manifest(path: Path) -> BundleManifest:
    """The bundle folder's manifest, typed (not verified: see :func:`verify_bundle`)."""
    try:
        data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorruptBundleError(f"bundle {path.name}: {MANIFEST} is missing") from None
    except json.JSONDecodeError as exc:
        raise CorruptBundleError(f"bundle {path.name}: {MANIFEST} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CorruptBundleError(f"bundle {path.name}: {MANIFEST} is not a JSON object")
    try:
        return BundleManifest.from_json(data)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise CorruptBundleError(
            f"bundle {path.name}: {MANIFEST} is not a bundle manifest ({where})"
        ) from None


def verify_bundle(path: Path) -> BundleManifest:
    """Check every file against the manifest and the manifest against the id; return the manifest."""
    manifest = read_manifest(path)
    problems = []
    for rel, expected in manifest.files.items():
        f = path / rel
        if not f.exists():
            problems.append(f"{rel} is missing")
        elif digest(f.read_bytes()) != expected:
            problems.append(f"{rel} does not match its checksum")
    if manifest.id != path.name or manifest.content_id() != path.name:
        problems.append(f"{MANIFEST} does not match the bundle id (it was edited)")
    if problems:
        raise CorruptBundleError(
            f"bundle {path.name} is corrupted and will not be loaded: {'; '.join(problems)}. "
            "Use another bundle: retrain (`propensity train`), roll back (`propensity models rollback`), or "
            "promote a healthy one over it (`propensity models promote ID --force --reason '...'`)."
        )
    return manifest


def load_bundle(path: Path) -> Bundle:
    """Load a bundle after verifying its checksums (raises :class:`CorruptBundleError`)."""
    manifest = verify_bundle(path)
    actions = {}
    for name, info in manifest.actions.items():
        d = path / name

        def js(fname: str, _d: Path = d) -> Any:
            return json.loads((_d / fname).read_text(encoding="utf-8"))

        def reader(folder: Path) -> Any:
            def read(fname: str) -> str | None:
                f = folder / fname
                return f.read_text(encoding="utf-8") if f.exists() else None

            return read

        evaluation = None
        if (d / "evaluation" / "calibrator.json").exists():
            evaluation = (
                ServedModel.from_files(reader(d / "evaluation")),
                Calibrator.from_json(js("evaluation/calibrator.json")),
            )
        actions[name] = ActionArtifacts(
            encoder=FeatureEncoder.from_json(js("encoder.json")),
            model=ServedModel.from_files(reader(d)),
            calibrator=Calibrator.from_json(js("calibrator.json")),
            baseline=LogisticBaseline.from_json(js("baseline.json")),
            baseline_calibrator=Calibrator.from_json(js("baseline_calibrator.json")),
            info=info.model_dump(mode="json", exclude_unset=True),
            evaluation=evaluation,
        )
    return Bundle(manifest.id, path, manifest, actions)
