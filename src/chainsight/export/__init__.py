"""Export: span processors and exporters, Prometheus metric families, OTLP metrics."""
