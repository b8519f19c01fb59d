"""Monitoring: drift, freshness, volume and calibration monitors, alerts, and the monitoring report."""
