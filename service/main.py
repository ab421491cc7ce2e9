"""Wiring only: settings, lifespan (engine up, warm-up, engine down), middleware, handlers, routers."""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from PIL import Image

from service.engine import Engine
from service.errors import UnexpectedErrorMiddleware, install_handlers
from service.limits import BodyLimitMiddleware
from service.memory import trim_when_idle
from service.metrics import Metrics, MetricsMiddleware
from service.routes import detect, health, metrics, models, morph, reconstruct
from service.settings import Settings, load_settings

log = logging.getLogger("service")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Pillow only warns between its limit and twice it; a warning must refuse the image like the error does.
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
    settings: Settings = app.state.settings
    engine: Engine = app.state.engine or Engine.load(settings)
    app.state.engine = engine
    await engine.call(engine.warm_up)
    m: Metrics = app.state.metrics
    for graph in engine.graphs.values():  # observed from here on: warm-up runs are not traffic
        graph.observe = m.observe_inference
        m.provider.labels(graph=graph.key, provider=graph.providers[0]).set(1)
    m.admitted.set_function(lambda: engine.admitted)
    reason = engine.not_ready_reason()
    if reason:
        log.error("not ready: %s", reason)
    log.info("serving models from %s on %s", settings.models_dir,
             sorted({g.providers[0] for g in engine.graphs.values()}))
    trimmer = asyncio.create_task(trim_when_idle(engine, m, settings.memory_trim_s))
    try:
        yield
    finally:
        trimmer.cancel()
        engine.draining = True
        engine.close()


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """`engine` may be loaded beforehand (python -m service does, to fail with one line, not a traceback)."""
    settings = settings or load_settings()
    app = FastAPI(
        title="Debiased face detection",
        summary="Face / not-face with a standard CNN or a DB-VAE, served with ONNX Runtime.",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings, app.state.engine, app.state.metrics = settings, engine, Metrics()
    install_handlers(app)
    # Added innermost first: metrics see every final status, including the 500s and 413s made below them.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(UnexpectedErrorMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    for module in (detect, reconstruct, morph, health, models, metrics):
        app.include_router(module.router)
    return app
