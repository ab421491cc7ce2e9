"""Idle-time trimming of freed heap memory (service/memory.py): when it runs, when it must not, and that the
real app does it after traffic and reports it in /metrics."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.memory import malloc_trim, trim_when_idle
from service.metrics import Metrics
from tests.utils.images import variants


def trims(client: TestClient) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("facedet_memory_trims_total "):
            return float(line.split()[1])
    raise AssertionError("facedet_memory_trims_total missing from /metrics")


def test_this_machines_c_library_has_malloc_trim() -> None:
    trim = malloc_trim()
    assert trim is not None  # glibc (Linux CI, the python:3.11-slim image)
    assert trim() in (0, 1)  # 1: memory was released, 0: nothing to release


def test_trims_only_when_idle_and_only_after_new_traffic() -> None:
    admission = SimpleNamespace(admitted=3, served=0)
    metrics, calls = Metrics(), []

    async def scenario() -> list[int]:
        task = asyncio.create_task(trim_when_idle(admission, metrics, 0.01, trim=lambda: calls.append(1)))
        await asyncio.sleep(0)  # the task starts and notes the requests served so far (none)
        seen = []
        admission.served = 5  # traffic, but requests still in flight: no trim
        await asyncio.sleep(0.08)
        seen.append(len(calls))
        admission.admitted = 0  # now idle after traffic: exactly one trim
        await asyncio.sleep(0.08)
        seen.append(len(calls))
        await asyncio.sleep(0.08)  # still idle, no new traffic: no more trims
        seen.append(len(calls))
        admission.served = 6  # one more request served: one more trim
        await asyncio.sleep(0.08)
        seen.append(len(calls))
        task.cancel()
        return seen

    assert asyncio.run(scenario()) == [0, 1, 1, 2]
    assert metrics.memory_trims._value.get() == 2


@pytest.mark.parametrize("interval", [0.02, 0.0])
def test_the_app_trims_after_traffic_unless_turned_off(make_settings, interval: float) -> None:
    with TestClient(create_app(make_settings(memory_trim_s=interval))) as client:
        time.sleep(0.2)
        assert trims(client) == 0.0  # warm-up is not traffic
        for _ in range(3):
            assert client.post("/v1/detect", files={"image": ("x.png", variants(0)["rgb.png"])}).status_code == 200
        time.sleep(0.3)  # 15 intervals: the trim after the last request has happened
        after_traffic = trims(client)
        time.sleep(0.3)
        # Idle since: no more trims (the /metrics reads are not admitted requests, so not traffic either).
        assert trims(client) == after_traffic
        assert (after_traffic >= 1) if interval else (after_traffic == 0)
