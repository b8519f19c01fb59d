"""What training produces for one action, before the registry writes it into a bundle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from propensity.training.calibration import Calibrator
from propensity.training.encoding import FeatureEncoder
from propensity.training.trainers import LogisticBaseline, ServedModel


@dataclass
class ActionArtifacts:
    """One action's fitted objects (stored as the bundle's files) and ``info`` (its manifest entry: definition,
    feature order, metrics, calibration, importance, score quantiles).

    ``evaluation`` is the procedure as of the test split (model and calibrator), None in format-1 bundles."""

    encoder: FeatureEncoder
    model: ServedModel
    calibrator: Calibrator
    baseline: LogisticBaseline
    baseline_calibrator: Calibrator
    info: dict[str, Any]
    evaluation: tuple[ServedModel, Calibrator] | None = None
