"""Photo scans queue only while the photo work ahead of them would let them start within FACEDET_MAX_QUEUE_WAIT_S:
past that a request gets a 503 + Retry-After at once (Admission.run with a cost), never a wait of many seconds."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sklearn.datasets import load_sample_image

from service.admission import Admission
from service.problems import ProblemError


def test_costed_work_waits_only_while_it_can_finish_in_time(make_settings: Callable) -> None:
    admission = Admission(make_settings(worker_threads=2, max_queue_wait_s=1.0))

    async def scenario() -> tuple[list[str], float]:
        release = asyncio.Event()
        loop = asyncio.get_running_loop()
        started = asyncio.Event()

        def job() -> str:
            loop.call_soon_threadsafe(started.set)
            while not release.is_set():
                time.sleep(0.001)
            return "done"

        first = asyncio.ensure_future(admission.run(job, cost_s=5.0))  # a thread is free: runs, however long
        await started.wait()
        second = asyncio.ensure_future(admission.run(job, cost_s=0.4))  # the second thread is free: runs too
        third = asyncio.ensure_future(admission.run(lambda: "late", cost_s=0.4))  # would wait (5 + 0.4) / 2 > 1 s
        uncosted = asyncio.ensure_future(admission.run(lambda: "crop"))  # no cost: never refused for it
        with pytest.raises(ProblemError) as refused:
            await third
        backlog, costed = admission.backlog_s, admission.costed
        release.set()
        answers = [await first, await second, await uncosted, refused.value.slug, refused.value.headers["Retry-After"]]
        return answers, (backlog, costed)

    try:
        answers, (backlog, costed) = asyncio.run(scenario())
        assert answers == ["done", "done", "crop", "queue-full", "1"]
        assert (backlog, costed) == (5.4, 2)  # the refused one never held any
        assert admission.backlog_s == 0.0 and admission.costed == 0
    finally:
        admission.close()


def photo_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(load_sample_image("china.jpg")).save(buffer, "JPEG", quality=90)  # 640x427, a real photo
    return buffer.getvalue()


def test_a_flood_of_photos_gets_fast_503s_and_the_rest_answered(make_settings: Callable) -> None:
    from service.main import create_app

    app = create_app(make_settings(worker_threads=1, max_queue_wait_s=0.01))
    photo = photo_jpeg()
    with TestClient(app) as client, ThreadPoolExecutor(8) as pool:
        pipeline = app.state.pipeline
        assert pipeline.runtime.scan_seconds_per_pixel > 0  # timed at warm-up: the first estimate

        def post(_: int) -> tuple[int, float, str]:
            start = time.perf_counter()
            r = client.post("/v1/detect", files={"image": ("china.jpg", photo)})
            return r.status_code, time.perf_counter() - start, r.headers.get("retry-after", "")

        results = list(pool.map(post, range(8)))
        codes = [code for code, _, _ in results]
        assert 200 in codes and 503 in codes and set(codes) <= {200, 503}
        assert all(retry == "1" for code, _, retry in results if code == 503)
        slowest_ok = max(t for code, t, _ in results if code == 200)
        assert np.median([t for code, t, _ in results if code == 503]) < slowest_ok
        assert pipeline.scan_seconds_per_pixel > 0 and app.state.admission.backlog_s == 0.0
