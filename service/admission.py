"""Admission control and the thread pool: a bounded number of requests in the system, and the threads that
run their CPU work (decoding, inference) off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from service.problems import ProblemError
from service.settings import Settings

T = TypeVar("T")


class Admission:
    def __init__(self, settings: Settings):
        self.retry_after_s = settings.retry_after_s
        self.capacity = settings.worker_threads + settings.max_queue
        self.workers = settings.worker_threads
        self.admitted = 0  # requests holding a place now
        self.served = 0  # requests that held a place and left: service/memory.py trims after new traffic
        self.draining = False  # set on SIGTERM: readiness turns 503 while admitted requests finish
        self._pool = ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="inference")

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold one of `worker_threads + max_queue` places, or fail fast with 503 + Retry-After."""
        if self.admitted >= self.capacity:
            raise ProblemError(503, "overloaded", "Service overloaded",
                               f"{self.admitted} requests are already in flight or queued; retry shortly",
                               headers={"Retry-After": str(self.retry_after_s)})
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1
            self.served += 1

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU work in the bounded pool, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
