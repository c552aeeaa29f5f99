"""Prometheus metrics, one registry per app (so tests and workers each get their own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("vdis_requests", "HTTP requests",
                                ["route", "method", "status", "model"], registry=self.registry)
        self.latency = Histogram("vdis_request_latency_seconds", "HTTP request latency",
                                 ["route"], buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.request_phase = Counter("vdis_request_phase_seconds",
                                     "HTTP request time by phase (service.timing)",
                                     ["route", "phase"], registry=self.registry)
        by_call = ["model", "graph"]
        self.batch_rows = Histogram("vdis_batch_size", "rows in one onnxruntime call", by_call,
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.batch_requests = Histogram("vdis_batch_requests", "requests merged into one call",
                                        by_call, buckets=BATCH_BUCKETS, registry=self.registry)
        self.queue_wait = Histogram("vdis_queue_wait_seconds", "time a request waited to run",
                                    by_call, buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.inference = Histogram("vdis_inference_seconds", "one onnxruntime call", by_call,
                                   buckets=LATENCY_BUCKETS_S, registry=self.registry)

        # The Redis engine's queue and workers, read from Redis at each scrape (engine.probe).
        self.queue_length = Gauge("vdis_queue_length", "jobs in a model's Redis stream",
                                  ["model"], registry=self.registry)
        self.queue_pending = Gauge("vdis_queue_pending", "jobs read by a worker, not yet acked",
                                   ["model"], registry=self.registry)
        self.model_workers = Gauge("vdis_model_workers", "live workers serving a model",
                                   ["model"], registry=self.registry)
        self.dead_letters = Gauge("vdis_dead_letters", "jobs in the dead-letter stream",
                                  registry=self.registry)
        self.workers = Gauge("vdis_workers", "workers with a live heartbeat",
                             registry=self.registry)
        self.worker_jobs = Gauge("vdis_worker_jobs", "jobs a worker answered since it started",
                                 ["worker"], registry=self.registry)
        self.worker_rows_per_s = Gauge("vdis_worker_rows_per_second",
                                       "rows a worker ran per second, last heartbeat period",
                                       ["worker"], registry=self.registry)
        self.worker_batches = Gauge("vdis_worker_batches", "a worker's onnxruntime calls by rows",
                                    ["worker", "rows"], registry=self.registry)

    def on_engine(self, info: dict) -> None:
        """Set the queue and worker gauges from engine.probe() (nothing for the local engine)."""
        if "queue" not in info or "workers" not in info:
            return
        for name, model in info.get("models", {}).items():
            self.queue_length.labels(name).set(model["queued"])
            self.queue_pending.labels(name).set(model["pending"])
            self.model_workers.labels(name).set(len(model["workers"]))
        self.dead_letters.set(info["queue"]["dead_letters"])
        self.workers.set(len(info["workers"]))
        for gauge in (self.worker_jobs, self.worker_rows_per_s, self.worker_batches):
            gauge.clear()  # workers that stopped beating disappear
        for worker in info["workers"]:
            name = worker["name"]
            self.worker_jobs.labels(name).set(worker["counts"].get("jobs", 0))
            self.worker_rows_per_s.labels(name).set(worker["rows_per_s"])
            for rows, calls in worker["batch_rows"].items():
                self.worker_batches.labels(name, rows).set(calls)

    def on_request(self, scope: dict, status: int, spent: dict[str, float]) -> None:
        """An HTTP request's answer (service.timing.ServerTiming's observer)."""
        path = getattr(scope.get("route"), "path", "unmatched")
        model = scope.get("state", {}).get("model", "")  # set by the routes' model dependency
        self.requests.labels(path, scope["method"], str(status), model).inc()
        self.latency.labels(path).observe(sum(spent.values()))
        for name, seconds in spent.items():
            self.request_phase.labels(path, name).inc(seconds)

    def on_batch(self, model: str, graph: str, rows: int, waits_s: list[float],
                 run_s: float) -> None:
        """The in-process engine's hook (service.engine.local.ModelBatchObserver)."""
        self.batch_rows.labels(model, graph).observe(rows)
        self.batch_requests.labels(model, graph).observe(len(waits_s))
        for wait in waits_s:
            self.queue_wait.labels(model, graph).observe(wait)
        self.inference.labels(model, graph).observe(run_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)
