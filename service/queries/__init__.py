"""Read-side views for operators: status, listings and Prometheus metrics."""
