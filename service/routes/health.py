"""Liveness and readiness. Both answer from the event loop, never waiting on the inference pool."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import MetricsDep, PipelineDep
from service.errors import problem_responses
from service.problems import ProblemError
from service.routes import UNEXPECTED
from service.schemas import Liveness, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Liveness, summary="The process is alive", responses=UNEXPECTED)
async def healthz() -> Liveness:
    return Liveness(status="alive")


@router.get("/readyz", response_model=Readiness,
            summary="Models loaded and warmed up in every worker process; not shutting down",
            responses=problem_responses(503, 500, described={
                503: "Not ready: models not loaded or warmed up (in some worker process), a required GPU missing, "
                     "or shutting down"}))
async def readyz(pipeline: PipelineDep, metrics: MetricsDep) -> Readiness:
    reason = pipeline.not_ready_reason()
    metrics.ready.set(0 if reason else 1)
    reason = reason or metrics.workers_not_ready()
    if reason:
        raise ProblemError(503, "not-ready", "Not ready", reason)
    return Readiness(status="ready", providers={k: g.providers[0] for k, g in pipeline.runtime.graphs.items()})
