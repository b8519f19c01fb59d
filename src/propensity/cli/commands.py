"""Imports every command module so that their commands register on the root app."""

from __future__ import annotations
