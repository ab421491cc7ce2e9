"""FastAPI dependencies for the light routes (health, models, metrics): the objects the lifespan put on app.state.
The upload routes read app.state directly instead (see service/routes/detect.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.metrics import Metrics
from service.pipeline import Pipeline


# async on purpose: FastAPI runs a plain `def` dependency in its thread pool, i.e. a thread hop per
# dependency per request for an attribute read.
async def get_pipeline(request: Request) -> Pipeline:
    return request.app.state.pipeline


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
