"""Micro-batching (FACEDET_MICRO_BATCH_MAX): concurrent /v1/detect requests share one inference and get exactly
the answers they get unbatched.

Deterministic without timing: the batch size equals the number of requests sent at once and the wait is far
longer than any test, so a batch leaves only when it is full; with one pool thread it leaves whole (with more,
it is shared out among them, also checked). The inference count is read from the service's own batch-size
metric.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from fastapi.testclient import TestClient

from tests.utils.images import bad_inputs, variants

NEVER_MS = 60_000.0  # the longest wait the settings allow: a batch leaves when full, never on the timer
ONE_THREAD = {"worker_threads": 1}


@contextmanager
def serving(make_settings: Callable, **overrides) -> Iterator[TestClient]:
    from service.main import create_app

    with TestClient(create_app(make_settings(**overrides))) as client:
        yield client


def inferences(client: TestClient, graph: str = "dbvae.encoder") -> tuple[float, float]:
    """(inference calls, images in them) on one graph since start-up (warm-up runs are not counted)."""
    registry = client.app.state.metrics.registry
    count = registry.get_sample_value("facedet_inference_batch_size_count", {"graph": graph}) or 0.0
    total = registry.get_sample_value("facedet_inference_batch_size_sum", {"graph": graph}) or 0.0
    return count, total


def post_all(client: TestClient, requests: list[tuple[list[tuple[str, bytes]], dict]]) -> list[tuple[int, dict]]:
    """Send every request at once (one thread each) -> [(status, JSON body)] in the order given."""
    def send(request):
        files, params = request
        response = client.post("/v1/detect", files=[("image", f) for f in files], params=params)
        return response.status_code, response.json()

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(send, requests))


def single_image_requests(n: int) -> list[tuple[list[tuple[str, bytes]], dict]]:
    return [([(f"{i}.png", variants(i)["rgb.png"])], {}) for i in range(n)]


def test_concurrent_requests_share_one_inference_with_unbatched_answers(make_settings) -> None:
    requests = single_image_requests(6)
    with serving(make_settings, micro_batch_max=0) as plain:
        expected = post_all(plain, requests)
        assert inferences(plain) == (6, 6)  # off: one inference per request
        assert plain.app.state.pipeline.batchers == {}
    with serving(make_settings, micro_batch_max=6, micro_batch_wait_ms=NEVER_MS, **ONE_THREAD) as batched:
        answers = post_all(batched, requests)
        assert inferences(batched) == (1, 6)
        assert batched.app.state.admission.admitted == 0
    assert all(status == 200 for status, _ in expected)
    assert answers == expected  # same probabilities to the last bit, same decisions, same order


def test_multi_image_requests_stay_whole_and_in_order(make_settings) -> None:
    requests = [([(f"a{i}.png", variants(i)["rgb.png"]) for i in range(3)], {}),
                ([(f"b{i}.jpg", variants(i + 3)["rgb.jpg"]) for i in range(2)], {})]
    with serving(make_settings, micro_batch_max=0) as plain:
        expected = post_all(plain, requests)
    with serving(make_settings, micro_batch_max=5, micro_batch_wait_ms=NEVER_MS, **ONE_THREAD) as batched:
        answers = post_all(batched, requests)
        assert inferences(batched) == (1, 5)
    assert [len(body["results"]) for _, body in answers] == [3, 2]
    assert answers == expected


def test_a_bad_upload_fails_only_its_own_request(make_settings) -> None:
    corrupt, status = bad_inputs()["truncated.png"]
    requests = [*single_image_requests(2), ([("bad.png", corrupt)], {})]
    with serving(make_settings, micro_batch_max=0) as plain:
        expected = post_all(plain, requests)
    with serving(make_settings, micro_batch_max=3, micro_batch_wait_ms=NEVER_MS, **ONE_THREAD) as batched:
        answers = post_all(batched, requests)
        assert inferences(batched) == (1, 2)  # the two good images, in one inference
        assert [s for s, _ in post_all(batched, single_image_requests(3))] == [200] * 3  # still batching
        assert inferences(batched) == (2, 5)
    assert [s for s, _ in answers] == [200, 200, status]
    assert answers[2][1]["type"] == "urn:facedet:problem:corrupt-image"
    assert answers == expected


def test_each_model_batches_separately(make_settings) -> None:
    requests = [(files, {"model": "cnn"}) for files, _ in single_image_requests(4)]
    with serving(make_settings, micro_batch_max=0) as plain:
        expected = post_all(plain, requests)
    with serving(make_settings, micro_batch_max=4, micro_batch_wait_ms=NEVER_MS, **ONE_THREAD) as batched:
        answers = post_all(batched, requests)
        assert inferences(batched, "cnn.classifier") == (1, 4)
        assert inferences(batched, "dbvae.encoder") == (0, 0)
    assert answers == expected
    assert {body["model"] for _, body in answers} == {"cnn"}


def test_a_full_batch_is_shared_out_among_free_pool_threads(make_settings) -> None:
    requests = single_image_requests(4)
    with serving(make_settings, micro_batch_max=0) as plain:
        expected = post_all(plain, requests)
    with serving(make_settings, micro_batch_max=4, micro_batch_wait_ms=NEVER_MS, worker_threads=2) as batched:
        answers = post_all(batched, requests)
        assert inferences(batched) == (2, 4)  # two batches of 2, one per thread
    assert answers == expected


def test_a_lone_request_leaves_after_the_wait(make_settings) -> None:
    with serving(make_settings, micro_batch_max=8, micro_batch_wait_ms=1.0) as batched:
        response = batched.post("/v1/detect", files={"image": ("x.png", variants(0)["rgb.png"])})
        assert response.status_code == 200
        assert 0.0 <= response.json()["results"][0]["face_probability"] <= 1.0
        assert inferences(batched) == (1, 1)


def test_micro_batch_sizes_are_warmed_up(make_settings) -> None:
    with serving(make_settings, max_images_per_request=4, micro_batch_max=16) as client:
        models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert models["dbvae"]["graphs"]["encoder"]["warmed_batch_sizes"] == [1, 2, 4, 8, 16]
    assert models["cnn"]["graphs"]["classifier"]["warmed_batch_sizes"] == [1, 2, 4, 8, 16]
