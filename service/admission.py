"""Admission control and the thread pool: a bounded number of requests in the system, and the threads that
run their CPU work (decoding, inference) off the event loop."""

from __future__ import annotations

import asyncio
import time
from collections import deque
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
# Weight of each new inline job's time in the running mean that decides how many waiting requests a turn wakes.
INLINE_COST_WEIGHT = 0.1


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
        # Small requests' work on the event loop, per turn of it (FACEDET_INLINE_TURN_BUDGET_MS): without the bound,
        # wrk at 64 connections saw late connections' first answers after up to ~1 s, while no request the server had
        # read took more than ~0.1 s.
        self.inline_turn_budget_s = settings.inline_turn_budget_ms / 1e3
        self.max_queue_wait_s = settings.max_queue_wait_s
        self._costs: list[float] = []  # estimated seconds of each costed job (a photo scan) queued or running
        self._inline_spent = 0.0  # seconds of inline work in this turn of the event loop so far
        # Small requests that found this turn's budget spent wait for a later turn, first come first served. They
        # used to take the pool instead, and the tail came out bimodal (wrk crop64 at c=32 on two workers: p10 9 ms,
        # p50 33 ms), as requests read later still found budget in their own turn and went ahead of those handed to
        # the pool. Three alternating rounds on two workers, p99 before -> in order: 87-103 -> 48-65 ms at c=32,
        # 143-172 -> 98-99 ms at c=64; req/s 875-1,091 -> 916-1,152 and 971-1,069 -> 941-995.
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._granted = 0  # of those, woken for the coming turn and not yet running: later ones queue behind them
        self._inline_cost_s = self.inline_turn_budget_s / 2  # running mean of one small request's inline work
        self._turn_scheduled = False
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

    @property
    def backlog_s(self) -> float:
        """Estimated seconds of the costed work queued or running in the pool."""
        return sum(self._costs)

    @property
    def costed(self) -> int:
        return len(self._costs)

    def inline_room(self) -> bool:
        """Whether this turn of the event loop may still do a small request's work itself."""
        return self._inline_spent < self.inline_turn_budget_s

    async def inline_turn(self) -> bool:
        """Whether a small request does its work on the event loop (False with no budget: FACEDET_INLINE_TURN_
        BUDGET_MS=0 sends it to the pool): at once while this turn has budget left and no small request waits,
        else after those ahead of it, in a later turn."""
        if self.inline_turn_budget_s <= 0:
            return False
        if not self._waiting and not self._granted and self.inline_room():
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        self._schedule_turn()
        try:
            await waiter
        finally:
            if waiter.done() and not waiter.cancelled():  # woken (a disconnect may still cancel it after that)
                self._granted -= 1
        return True

    @contextmanager
    def inline(self) -> Iterator[None]:
        """Time work done on the event loop against this turn's budget; the next turn starts afresh."""
        if self._inline_spent == 0.0:
            self._schedule_turn()
        start = time.perf_counter()
        try:
            yield
        finally:
            took = max(time.perf_counter() - start, 1e-9)
            self._inline_spent += took
            self._inline_cost_s += INLINE_COST_WEIGHT * (took - self._inline_cost_s)

    def _schedule_turn(self) -> None:
        """_new_turn once in the loop's next turn: a callback scheduled now runs after that turn's I/O poll."""
        if not self._turn_scheduled:
            self._turn_scheduled = True
            asyncio.get_running_loop().call_soon(self._new_turn)

    def _new_turn(self) -> None:
        """The budget afresh, and as many waiting requests woken, in order, as it is expected to hold (at least one):
        they run in the turn after this callback's, ahead of any request read meanwhile."""
        self._turn_scheduled = False
        self._inline_spent = 0.0
        room = self.inline_turn_budget_s
        while self._waiting and room > 0:
            waiter = self._waiting.popleft()
            if not waiter.done():  # a waiter whose request was cancelled (client gone) is skipped
                waiter.set_result(None)
                self._granted += 1
                room -= self._inline_cost_s
        if self._waiting:
            self._schedule_turn()

    async def run(self, fn: Callable[..., T], *args: Any, cost_s: float = 0.0) -> T:
        """Run CPU work in the bounded pool, off the event loop. Work with an estimated cost (a photo scan) starts
        at once while a pool thread is free of such work; past that it queues only if the costed work ahead of it
        would let it start within FACEDET_MAX_QUEUE_WAIT_S, else it gets 503 + Retry-After now."""
        if cost_s > 0.0 and self.costed >= self.workers:
            wait_s = self.backlog_s / self.workers
            if wait_s > self.max_queue_wait_s:
                raise ProblemError(503, "queue-full", "Service overloaded",
                                   f"the photos ahead of this one would hold it ~{wait_s:.1f} s before it starts, "
                                   f"over FACEDET_MAX_QUEUE_WAIT_S={self.max_queue_wait_s:g}; retry shortly",
                                   headers={"Retry-After": str(self.retry_after_s)})
        if cost_s <= 0.0:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        self._costs.append(cost_s)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self._costs.remove(cost_s)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
