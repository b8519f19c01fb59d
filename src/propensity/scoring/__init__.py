"""Scoring: batch and online scoring of production bundles, and the rule-based fallback scorer."""
