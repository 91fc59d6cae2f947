"""Prometheus metrics with the standard client library: one set per server process.

With several worker processes the CLI points PROMETHEUS_MULTIPROC_DIR at a fresh
directory, and /metrics aggregates every worker's values through
prometheus-client's multiprocess collector.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """Request counts, latencies, batch sizes, queue depth and failures, labelled by model."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "axonrt_requests",
            "Infer requests by model and HTTP status",
            ["model", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "axonrt_request_duration_seconds",
            "Infer request latency from body received to response ready",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "axonrt_batch_size",
            "Rows per executed batch",
            ["model"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue = Gauge(
            "axonrt_queue_depth",
            "Requests waiting to be batched",
            ["model"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.failures = Counter(
            "axonrt_failures",
            "Failed infer requests by model and reason",
            ["model", "reason"],
            registry=r,
        )

    def queued(self, model: str, depth: int) -> None:
        """The batcher's queue depth changed."""
        self.queue.labels(model).set(depth)

    def batch(self, model: str, rows: int) -> None:
        """A batch of `rows` rows started running."""
        self.batch_size.labels(model).observe(rows)

    def request(self, model: str, code: int, seconds: float, reason: str | None) -> None:
        """An infer request finished with HTTP status `code`."""
        self.requests.labels(model, str(code)).inc()
        self.latency.labels(model).observe(seconds)
        if reason is not None:
            self.failures.labels(model, reason).inc()

    def render(self) -> bytes:
        """The text exposition of every metric (all workers' when multiprocess)."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


__all__ = ["Metrics"]
