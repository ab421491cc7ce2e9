"""Micro-batching: concurrent /detect requests for the same model answered by one decode-and-infer job.

A request's images join a pending batch; the batch goes to the inference pool when it holds `max_images`
images or when its first request has waited `wait_s` (0: as soon as a pool thread is free), whichever comes
first. At most `max_in_flight` batches run at once (one per pool thread): while all are busy, new requests
keep collecting, so batches grow with the load instead of queueing in the executor one by one; when
threads are free, the waiting requests are shared out among them. Requests are never split: a request with
more images than `max_images` runs as a batch of its own.

All state lives on the event loop (no locks); only `work` runs in the pool. `work` gets every pending
request's payloads and returns, per request, its result or the exception to raise for it, so one bad
upload fails only its own request.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

Work = Callable[[list[Any]], list[Any]]


class MicroBatcher:
    def __init__(self, work: Work, call: Callable[[Work, list[Any]], Awaitable[list[Any]]], *, max_images: int,
                 wait_s: float, max_in_flight: int) -> None:
        self.work, self.call = work, call
        self.max_images, self.wait_s, self.max_in_flight = max_images, wait_s, max_in_flight
        self._pending: deque[tuple[Any, int, asyncio.Future]] = deque()
        self._pending_images = 0
        self._due = False  # the pending requests may go: the batch is full or its first request waited wait_s
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight = 0

    async def submit(self, item: Any, images: int) -> Any:
        """Queue one request (`images` of them in `item`) and wait for its own answer."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((item, images, future))
        self._pending_images += images
        if self._pending_images >= self.max_images or self.wait_s <= 0:
            self._due = True
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.wait_s, self._on_timer)
        self._dispatch()
        return await future

    def _on_timer(self) -> None:
        self._timer = None
        self._due = True
        self._dispatch()

    def _dispatch(self) -> None:
        while self._due and self._pending and self._in_flight < self.max_in_flight:
            # Spread what is waiting over the free pool threads: two batches of 3 on two cores answer
            # sooner than one of 6 on one core while the other idles.
            free = self.max_in_flight - self._in_flight
            size = min(self.max_images, -(-self._pending_images // free))
            batch, images = [], 0
            while self._pending and (not batch or images + self._pending[0][1] <= size):
                item, n, future = self._pending.popleft()
                batch.append((item, future))
                images += n
            self._pending_images -= images
            self._in_flight += 1
            asyncio.get_running_loop().create_task(self._run(batch))
        if not self._pending:
            self._due = False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    async def _run(self, batch: list[tuple[Any, asyncio.Future]]) -> None:
        try:
            results = await self.call(self.work, [item for item, _ in batch])
        except Exception as exc:  # noqa: BLE001 - the whole job failed: every request in it gets the error
            results = [exc] * len(batch)
        finally:
            self._in_flight -= 1
        for (_, future), result in zip(batch, results):
            if future.done():  # its request was cancelled (client gone)
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        self._dispatch()
