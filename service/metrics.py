"""Prometheus metrics, one registry per app (so tests and workers each get their own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("vdis_requests", "HTTP requests", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("vdis_request_latency_seconds", "HTTP request latency",
                                 ["route"], buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.batch_rows = Histogram("vdis_batch_size", "rows in one onnxruntime call", ["graph"],
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_requests = Histogram("vdis_batch_requests", "requests merged into one call",
                                        ["graph"], buckets=BATCH_BUCKETS, registry=self.registry)
        self.queue_wait = Histogram("vdis_queue_wait_seconds", "time a request waited to run",
                                    ["graph"], buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.inference = Histogram("vdis_inference_seconds", "one onnxruntime call", ["graph"],
                                   buckets=LATENCY_BUCKETS_S, registry=self.registry)

    def on_batch(self, graph: str, rows: int, waits_s: list[float], run_s: float) -> None:
        """The batcher's hook (service.engine.batcher.BatchObserver)."""
        self.batch_rows.labels(graph).observe(rows)
        self.batch_requests.labels(graph).observe(len(waits_s))
        for wait in waits_s:
            self.queue_wait.labels(graph).observe(wait)
        self.inference.labels(graph).observe(run_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
