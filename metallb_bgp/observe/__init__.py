"""What the daemons tell people: Prometheus metrics and health endpoints, structured logs, `plan`'s report."""
