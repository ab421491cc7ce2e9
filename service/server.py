"""uvicorn.Server that drains: on SIGTERM readiness turns 503 first, then uvicorn's graceful shutdown runs."""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import time
from types import FrameType

import uvicorn
from fastapi import FastAPI

from service.admission import Admission
from service.http import protocol_class
from service.settings import Settings

log = logging.getLogger("service.server")


def server_config(settings: Settings, app: FastAPI | str) -> uvicorn.Config:
    """The same for a single process and for every worker: the httptools protocol with header, timeout and
    connection limits (service/http.py), the keep-alive and graceful-shutdown timeouts, the log settings."""
    return uvicorn.Config(app, host=settings.host, port=settings.port, http=protocol_class(settings),
                          timeout_keep_alive=settings.keepalive_s, log_level=settings.log_level,
                          access_log=settings.access_log, timeout_graceful_shutdown=settings.graceful_timeout_s)


class DrainingServer(uvicorn.Server):
    """`parent_pid`: a worker's supervisor (service/workers.py). Should it vanish (SIGKILL), the worker drains
    and exits as on SIGTERM instead of serving on, orphaned, on a port nothing manages any more."""

    def __init__(self, config: uvicorn.Config, admission: Admission, delay_s: float,
                 parent_pid: int | None = None) -> None:
        super().__init__(config)
        self.admission, self.delay_s, self.parent_pid = admission, delay_s, parent_pid
        self._stop_at: float | None = None
        self._signal: int | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # What exists once the app is up (modules, ONNX Runtime sessions, the app) lives as long as the process.
        # Frozen, it is left out of every later collection, so a full one scans only what requests left behind:
        # under wrk, each worker otherwise ran a full collection of ~55-60 ms every ~15 s, stalling every request
        # it held meanwhile (gc.callbacks timing, crop64 at 32 and 64 connections).
        gc.collect()
        gc.freeze()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.admission.draining = True
        if self._stop_at is not None or self.delay_s <= 0:  # no delay wanted, or a second signal: stop now
            super().handle_exit(sig, frame)
            return
        log.info("%s: readiness is now 503; stopping in %.1fs", signal.Signals(sig).name, self.delay_s)
        self._stop_at, self._signal = time.monotonic() + self.delay_s, sig

    async def on_tick(self, counter: int) -> bool:
        if self.parent_pid is not None and not self.admission.draining and os.getppid() != self.parent_pid:
            log.warning("the supervisor (pid %d) is gone: draining", self.parent_pid)
            self.handle_exit(signal.SIGTERM, None)
        if self._stop_at is not None and not self.should_exit and time.monotonic() >= self._stop_at:
            super().handle_exit(self._signal or signal.SIGTERM, None)
        return await super().on_tick(counter)
