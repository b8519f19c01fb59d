"""Retraining: champion vs challenger on the latest matured window, gated promotion, recorded decisions."""
