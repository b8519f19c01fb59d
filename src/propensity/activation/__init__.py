"""Activation: the canonical score table's contract, segments, decision policies, and destinations."""
