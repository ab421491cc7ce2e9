"""FastAPI dependencies: the objects the lifespan put on app.state, and admission to the inference pool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from service.engine import Engine
from service.metrics import Metrics
from service.settings import Settings


# async on purpose: FastAPI runs a plain `def` dependency in its thread pool, i.e. a thread hop per
# dependency per request for an attribute read, which costs /detect throughput under load.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_engine(request: Request) -> Engine:
    return request.app.state.engine


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def admitted_engine(engine: Annotated[Engine, Depends(get_engine)]) -> AsyncIterator[Engine]:
    """The engine, once this request holds a place in the bounded queue (else 503 before any work)."""
    async with engine.admit():
        yield engine


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
AdmittedEngineDep = Annotated[Engine, Depends(admitted_engine)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
