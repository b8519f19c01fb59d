"""Imports every command module so that their commands register on the root app."""

from __future__ import annotations

from propensity.cli import datasets, features, ingest, models, project, quickstart, serve, training  # noqa: F401  (train, report, models)

from propensity.cli import features_ops  # noqa: F401  # isort: skip  (after features: audit, materialize, backfill)
from propensity.cli import activation, experiments, monitoring, scoring  # noqa: F401  # isort: skip

__all__ = ["datasets", "ingest", "project", "quickstart"]
