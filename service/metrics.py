"""Prometheus metrics, one registry per app so that several apps (tests) never share counters."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
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
                              registry=r)
        self.admitted = Gauge("facedet_requests_admitted", "Requests in flight or queued for inference",
                              registry=r)
        self.ready = Gauge("facedet_ready", "1 when /readyz answers 200", registry=r)
        self.memory_trims = Counter("facedet_memory_trims", "Idle-time returns of freed heap memory to the OS",
                                    registry=r)

    def observe_inference(self, graph: str, batch: int, seconds: float) -> None:
        self.batch_size.labels(graph=graph).observe(batch)
        self.inference.labels(graph=graph).observe(seconds)


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
