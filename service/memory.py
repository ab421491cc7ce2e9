"""Give freed heap memory back to the OS once the service goes idle (glibc's malloc_trim).

A burst of large uploads at high concurrency grows the C heap (request bodies, decoded images, a malloc arena
per thread). glibc keeps the freed pages for reuse, so resident memory stays at the burst's high-water mark
long after it: +11% after bench/load.py's 640x480 JPEG bursts at concurrency 64, none of it live. Trimming
only while no request is in flight, and only after new traffic, keeps it off the hot path; an idle service
makes no calls at all. Without glibc (musl, macOS) there is no malloc_trim and this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Callable

from service.admission import Admission
from service.metrics import Metrics

log = logging.getLogger("service")


def malloc_trim() -> Callable[[], object] | None:
    """glibc's malloc_trim(0) (every arena, all free pages), or None where the C library has none."""
    try:
        fn = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: fn(0)


async def trim_when_idle(admission: Admission, metrics: Metrics, interval_s: float,
                         trim: Callable[[], object] | None = None) -> None:
    """Runs for the app's lifetime (the lifespan cancels it)."""
    trim = trim or malloc_trim()
    if trim is None or interval_s <= 0:
        log.info("idle memory trimming off (%s)", "FACEDET_MEMORY_TRIM_S=0" if trim else "no malloc_trim here")
        return
    seen = admission.served
    while True:
        await asyncio.sleep(interval_s)
        if admission.admitted == 0 and admission.served != seen:
            seen = admission.served
            await asyncio.to_thread(trim)  # walks the heap under malloc's locks: not on the event loop
            metrics.memory_trims.inc()
