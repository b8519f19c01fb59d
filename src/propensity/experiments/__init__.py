"""Experiments: holdout groups, outcomes, lift with confidence intervals, and uplift models."""
