"""What operators see of a server: metrics, one log line per call, and health for probes."""
