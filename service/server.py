"""uvicorn.Server that drains: on SIGTERM readiness turns 503 first, then uvicorn's graceful shutdown runs."""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

import uvicorn

from service.admission import Admission

log = logging.getLogger("service.server")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, admission: Admission, delay_s: float) -> None:
        super().__init__(config)
        self.admission, self.delay_s = admission, delay_s
        self._stop_at: float | None = None
        self._signal: int | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.admission.draining = True
        if self._stop_at is not None or self.delay_s <= 0:  # no delay wanted, or a second signal: stop now
            super().handle_exit(sig, frame)
            return
        log.info("%s: readiness is now 503; stopping in %.1fs", signal.Signals(sig).name, self.delay_s)
        self._stop_at, self._signal = time.monotonic() + self.delay_s, sig

    async def on_tick(self, counter: int) -> bool:
        if self._stop_at is not None and not self.should_exit and time.monotonic() >= self._stop_at:
            super().handle_exit(self._signal or signal.SIGTERM, None)
        return await super().on_tick(counter)
