"""Wiring only: settings, lifespan (models up, warm-up, pool down), middleware, handlers, routers."""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from PIL import Image

from service.admission import Admission
from service.errors import UnexpectedErrorMiddleware, install_handlers
from service.limits import BodyLimitMiddleware
from service.memory import trim_when_idle
from service.metrics import Metrics, MetricsMiddleware, publish
from service.pipeline import Pipeline
from service.routes import detect, health, models, morph, page, reconstruct
from service.routes import metrics as metrics_routes
from service.runtime import Runtime
from service.settings import Settings, load_settings

log = logging.getLogger("service")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Pillow only warns between its limit and twice it; a warning must refuse the image like the error does.
    warnings.filterwarnings("error", category=Image.DecompressionBombWarning)
    settings: Settings = app.state.settings
    runtime: Runtime = app.state.runtime or Runtime.load(settings)
    admission: Admission = app.state.admission or Admission(settings)
    pipeline = Pipeline(settings, runtime, admission)
    app.state.runtime, app.state.admission, app.state.pipeline = runtime, admission, pipeline
    await admission.run(runtime.warm_up)
    m: Metrics = app.state.metrics
    for graph in runtime.graphs.values():  # observed from here on: warm-up runs are not traffic
        graph.observe = m.observe_inference
        m.provider.labels(graph=graph.key, provider=graph.providers[0]).set(1)
    publisher = None
    if m.multiprocess_dir:  # a worker of several: its gauges written to its file a few times a second
        publisher = asyncio.create_task(publish(m, admission, pipeline))
    else:  # one process: read at scrape time
        m.admitted.set_function(lambda: admission.admitted)
    reason = pipeline.not_ready_reason()
    if reason:
        log.error("not ready: %s", reason)
    log.info("serving models from %s on %s", settings.models_dir,
             sorted({g.providers[0] for g in runtime.graphs.values()}))
    trimmer = asyncio.create_task(trim_when_idle(admission, m, settings.memory_trim_s))
    try:
        yield
    finally:
        trimmer.cancel()
        if publisher is not None:
            publisher.cancel()
            m.ready.set(0)
        admission.draining = True
        admission.close()


def create_app(settings: Settings | None = None, runtime: Runtime | None = None,
               admission: Admission | None = None, metrics: Metrics | None = None) -> FastAPI:
    """`runtime` may be loaded beforehand (python -m service does, to fail with one line, not a traceback), and
    `admission` made beforehand (the draining server sets its flag); the lifespan makes whichever is missing.
    `metrics`: a worker's of several (service/workers.py); by default the app's own registry."""
    settings = settings or load_settings()
    app = FastAPI(
        title="Debiased face detection",
        summary="Face / not-face with a standard CNN or a DB-VAE, served with ONNX Runtime.",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings, app.state.metrics = settings, metrics or Metrics()
    app.state.runtime, app.state.admission, app.state.pipeline = runtime, admission, None
    install_handlers(app)
    # Added innermost first: metrics see every final status, including the 500s and 413s made below them.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(UnexpectedErrorMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    for module in (detect, reconstruct, morph, health, models, metrics_routes, page):
        app.include_router(module.router)
    return app
