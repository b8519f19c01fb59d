"""Monitoring: drift, freshness, volume and calibration monitors, alerts, and the monitoring report.

``runner.run_monitors(workspace)`` runs every monitor and stores the run; ``gauges.render_gauges(run)`` exposes
it to Prometheus; ``gauges.MonitorScheduler`` runs the monitors in the background of a server;
``report.write_report`` writes the HTML/JSON report from stored runs. See docs/monitoring.md.
"""
