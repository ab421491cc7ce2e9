"""GET /metrics in the Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.deps import MetricsDep, PipelineDep
from service.routes import UNEXPECTED

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **UNEXPECTED})
async def metrics(pipeline: PipelineDep, metrics: MetricsDep) -> Response:
    metrics.ready.set(0 if pipeline.not_ready_reason() else 1)
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
