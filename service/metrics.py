"""Prometheus metrics, one registry per app so that several apps (tests) never share counters.

In a worker of several (service/workers.py) the values live instead in prometheus_client's multiprocess files, one
set per worker in the supervisor's private PROMETHEUS_MULTIPROC_DIR (set before prometheus_client is imported, so
every value is written there), and the registry holds only the collector that adds them all up: /metrics in any
worker answers for the whole service. Counters and histograms are summed, dead workers' included, so totals never
go back; the gauges say per metric how workers combine, counting live workers only.
"""

from __future__ import annotations

import asyncio
import glob
import os
import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from service.admission import Admission
    from service.pipeline import Pipeline

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# How often a worker writes its own gauges to its file: how stale another worker's /readyz may see it.
PUBLISH_S = 0.25


class Metrics:
    def __init__(self, multiprocess_dir: str | None = None, workers: int = 1) -> None:
        self.multiprocess_dir, self.workers = multiprocess_dir, workers
        self.registry = CollectorRegistry()
        if multiprocess_dir:
            MultiProcessCollector(self.registry, path=multiprocess_dir)
        r = None if multiprocess_dir else self.registry  # registered here too, they would be exposed twice
        self.requests = Counter("facedet_requests", "HTTP requests answered", ["endpoint", "method", "status"],
                                registry=r)
        self.latency = Histogram("facedet_request_duration_seconds", "HTTP request latency", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.errors = Counter("facedet_errors", "Error responses by problem type", ["type"], registry=r)
        self.batch_size = Histogram("facedet_inference_batch_size", "Images (or latents) per inference",
                                    ["graph"], buckets=BATCH_BUCKETS, registry=r)
        self.inference = Histogram("facedet_inference_duration_seconds", "ONNX Runtime run time", ["graph"],
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.provider = Gauge("facedet_execution_provider",
                              "1 for the provider each graph's session actually runs on", ["graph", "provider"],
                              registry=r, multiprocess_mode="livemax")
        self.admitted = Gauge("facedet_requests_admitted", "Requests in flight or queued for inference",
                              registry=r, multiprocess_mode="livesum")
        self.ready = Gauge("facedet_ready", "1 when /readyz answers 200 (several workers: how many are ready)",
                           registry=r, multiprocess_mode="livesum")
        self.memory_trims = Counter("facedet_memory_trims", "Idle-time returns of freed heap memory to the OS",
                                    registry=r)
        # Several workers only, one series each (a pid label): how evenly the kernel spreads the connections over
        # them (service/workers.py, FACEDET_REUSE_PORT).
        self.worker_requests: Gauge | None = None
        if multiprocess_dir:
            self.worker_requests = Gauge("facedet_worker_requests", "Requests this worker process has admitted "
                                         "and finished since it started", registry=r, multiprocess_mode="liveall")

    def observe_inference(self, graph: str, batch: int, seconds: float) -> None:
        self.batch_size.labels(graph=graph).observe(batch)
        self.inference.labels(graph=graph).observe(seconds)

    def workers_not_ready(self) -> str | None:
        """Why the service as a whole is not ready although this worker is, or None (always, in one process)."""
        if not self.multiprocess_dir:
            return None
        ready = self.workers_ready()
        if ready >= self.workers:
            return None
        return f"{ready} of {self.workers} worker processes ready: the others are starting, being replaced or stopping"

    def workers_ready(self) -> int:
        """The facedet_ready gauges of the live workers, summed: their files, not this process's memory."""
        files = glob.glob(os.path.join(self.multiprocess_dir or "", "gauge_livesum_*.db"))
        for metric in MultiProcessCollector.merge(files, accumulate=False):
            if metric.name == "facedet_ready":
                return round(sum(sample.value for sample in metric.samples))
        return 0


async def publish(metrics: Metrics, admission: Admission, pipeline: Pipeline) -> None:
    """A worker's own gauges, written to its file for the other workers' /metrics and /readyz to read (a
    multiprocess gauge cannot be a function read at scrape time). Runs for the app's lifetime."""
    while True:
        metrics.admitted.set(admission.admitted)
        metrics.ready.set(0 if pipeline.not_ready_reason() else 1)
        if metrics.worker_requests is not None:
            metrics.worker_requests.set(admission.served)
        await asyncio.sleep(PUBLISH_S)


class MetricsMiddleware:
    """Counts and times every request, labelled by route template (not raw path: bounded cardinality)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            endpoint = _endpoint(scope)
            self.metrics.requests.labels(endpoint=endpoint, method=scope["method"], status=str(status)).inc()
            self.metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - start)


def _endpoint(scope: Scope) -> str:
    route = scope.get("route")
    if route is not None:
        return route.path
    # Refused before routing (e.g. a body over the byte cap): still attribute it if the path is ours.
    app = scope.get("app")
    known = app.openapi()["paths"] if hasattr(app, "openapi") else {}
    return scope["path"] if scope["path"] in known else "unmatched"
