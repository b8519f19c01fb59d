"""Imports every command module so that their commands register on the root app."""

from __future__ import annotations

from propensity.cli import datasets, ingest, project, quickstart

__all__ = ["datasets", "ingest", "project", "quickstart"]
