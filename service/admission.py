"""Admission control and the thread pool: a bounded number of requests in the system, and the threads that
run their CPU work (decoding, inference) off the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

from service.budget import MB
from service.problems import ProblemError
from service.settings import Settings

T = TypeVar("T")
# Requests estimated under this skip the memory budget: a crop or a small photo must not wait behind hostile ones,
# and what they can add up to is bounded by the queue (FACEDET_MAX_QUEUE) anyway.
SMALL_REQUEST_BYTES = 16 * MB


class Admission:
    def __init__(self, settings: Settings):
        self.retry_after_s = settings.retry_after_s
        self.capacity = settings.worker_threads + settings.max_queue
        self.workers = settings.worker_threads
        self.admitted = 0  # requests holding a place now
        self.served = 0  # requests that held a place and left: service/memory.py trims after new traffic
        self.memory_budget = settings.memory_budget_mb * MB
        self.memory_reserved = 0  # bytes in-flight requests hold of the budget now
        self.memory_peak = 0  # the most they held at once (tests, and a gauge for operators to come)
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

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        """Hold `nbytes` of the global memory budget (FACEDET_MEMORY_BUDGET_MB) while the request decodes, or fail
        fast with 503 + Retry-After. Entered and left on the event loop, so no lock is needed."""
        if nbytes < SMALL_REQUEST_BYTES:
            yield
            return
        if self.memory_reserved + nbytes > self.memory_budget:
            raise ProblemError(503, "memory-budget-full", "Service overloaded",
                               f"this request needs ~{nbytes // MB} MB to decode; {self.memory_reserved // MB} of "
                               f"the {self.memory_budget // MB} MB budget (FACEDET_MEMORY_BUDGET_MB) are in use; "
                               "retry shortly", headers={"Retry-After": str(self.retry_after_s)})
        self.memory_reserved += nbytes
        self.memory_peak = max(self.memory_peak, self.memory_reserved)
        try:
            yield
        finally:
            self.memory_reserved -= nbytes

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU work in the bounded pool, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
