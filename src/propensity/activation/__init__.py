"""Activation: validation gates, destinations, delivery and real-time activation of the canonical score rows."""
