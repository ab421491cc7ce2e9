"""Bad input gets a problem+json answer with the right status, and the service keeps serving after it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings
from tests.utils.images import bad_inputs, encode, picture, variants

GOOD = variants(0)["rgb.jpg"]
PROBLEM_KEYS = {"type", "title", "status", "detail"}


def assert_problem(response, status: int, type_slug: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert PROBLEM_KEYS <= set(body) and body["status"] == status
    assert body["type"].startswith("urn:facedet:problem:")
    if type_slug:
        assert body["type"] == f"urn:facedet:problem:{type_slug}"
    assert "Traceback" not in response.text
    return body


def assert_still_serving(client: TestClient) -> None:
    ok = client.post("/v1/detect", files={"image": ("ok.jpg", GOOD)})
    assert ok.status_code == 200 and 0.0 <= ok.json()["results"][0]["face_probability"] <= 1.0


BAD = bad_inputs()


@pytest.mark.parametrize("name", list(BAD))
@pytest.mark.parametrize("endpoint", ["/v1/detect", "/v1/reconstruct", "/v1/morph"])
def test_bad_image_bytes(client: TestClient, endpoint: str, name: str) -> None:
    data, status = BAD[name]
    if endpoint == "/v1/morph":  # the good image first: the message must name the bad one, b
        response = client.post(endpoint, files={"a": ("good.jpg", GOOD), "b": (name, data)})
        prefix = f"b '{name}'"
    else:
        response = client.post(endpoint, files={"image": (name, data)})
        prefix = f"image[0] '{name}'" if endpoint == "/v1/detect" else f"image '{name}'"
    body = assert_problem(response, status)
    assert body["detail"].startswith(prefix), body["detail"]
    assert_still_serving(client)


def test_messages_say_which_problem(client: TestClient) -> None:
    def detail(name: str) -> str:
        return client.post("/v1/detect", files={"image": (name, BAD[name][0])}).json()["detail"]

    assert "empty" in detail("empty.png")
    assert "not a JPEG, PNG, WebP, GIF, BMP or TIFF image" in detail("notes.txt")
    assert "not a JPEG" in detail("image.ppm")
    assert "truncated" in detail("truncated.jpg")
    assert "2500000000 pixels" in detail("bomb.png")


def test_the_bad_image_in_a_batch_is_named(client: TestClient) -> None:
    files = [("image", ("a.jpg", GOOD)), ("image", ("b.jpg", GOOD)), ("image", ("broken.txt", b"hello"))]
    body = assert_problem(client.post("/v1/detect", files=files), 415, "unsupported-image")
    assert body["detail"].startswith("image[2] 'broken.txt'")


@pytest.mark.parametrize(("request_kwargs", "fragment"), [
    ({}, "image: Field required"),
    ({"files": {"file": ("x.jpg", GOOD)}}, "image: Field required"),
    ({"data": {"image": "not a file"}}, "image"),
    ({"files": {"image": ("x.jpg", GOOD)}, "params": {"model": "resnet"}}, "model"),
])
def test_missing_file_or_bad_parameter_on_detect(client: TestClient, request_kwargs: dict, fragment: str) -> None:
    body = assert_problem(client.post("/v1/detect", **request_kwargs), 422, "validation-error")
    assert fragment in body["detail"]
    assert_still_serving(client)


MULTIPART = "multipart/form-data; boundary=abc"
MALFORMED = {  # body, Content-Type -> what python-multipart / Starlette say about it
    "no boundary": (b"--abc\r\n", "multipart/form-data", "Missing boundary in multipart."),
    "broken part header": (b"--abc\r\nno colon here\r\n\r\nx\r\n--abc--\r\n", MULTIPART,
                           "Invalid multipart data."),
    "part without a name": (b'--abc\r\nContent-Disposition: form-data; filename="x.jpg"\r\n\r\nx\r\n--abc--\r\n',
                            MULTIPART, 'The Content-Disposition header field "name" must be provided.'),
}


@pytest.mark.parametrize("case", list(MALFORMED))
@pytest.mark.parametrize("endpoint", ["/v1/detect", "/v1/reconstruct", "/v1/morph", "/detect"])
def test_malformed_multipart_is_a_400_problem(client: TestClient, endpoint: str, case: str) -> None:
    body, content_type, message = MALFORMED[case]
    response = client.post(endpoint, content=body, headers={"Content-Type": content_type})
    problem = assert_problem(response, 400, "malformed-body")
    assert problem["title"] == "Malformed request body"
    assert problem["detail"] == f"the multipart/form-data body cannot be parsed: {message}"
    assert_still_serving(client)


UPLOAD_STATUSES = {"400", "413", "415", "422", "503", "500"}
PROBLEM_CONTENT = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}


@pytest.mark.parametrize("path", ["/v1/detect", "/v1/reconstruct", "/v1/morph", "/detect", "/reconstruct", "/morph"])
def test_openapi_lists_every_upload_status_as_problem_json(client: TestClient, path: str) -> None:
    spec = client.get("/openapi.json").json()
    responses = spec["paths"][path]["post"]["responses"]
    assert UPLOAD_STATUSES | {"200"} == set(responses)
    for status in UPLOAD_STATUSES:  # only problem+json: FastAPI's HTTPValidationError and application/json are gone
        assert responses[status]["content"] == PROBLEM_CONTENT, status
        assert responses[status]["description"]
    assert responses["503"]["headers"]["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}
    assert "malformed" in responses["400"]["description"].lower()


def test_openapi_problem_schema_and_every_operation_documents_500(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    problem = spec["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation["responses"]["500"]["content"] == PROBLEM_CONTENT, (method, path)
    readyz = spec["paths"]["/readyz"]["get"]["responses"]["503"]
    assert readyz["content"] == PROBLEM_CONTENT and "headers" not in readyz  # not ready: no Retry-After


def test_too_many_images(client: TestClient) -> None:  # the module client allows 8
    files = [("image", (f"{i}.jpg", GOOD)) for i in range(9)]
    body = assert_problem(client.post("/v1/detect", files=files), 422, "too-many-images")
    assert "9 images" in body["detail"] and "at most 8" in body["detail"]
    assert_still_serving(client)


@pytest.mark.parametrize("params", [{"steps": 1}, {"steps": 13}, {"steps": "many"}, {"format": "bmp"}])
def test_morph_parameters_out_of_range(client: TestClient, params: dict) -> None:
    files = {"a": ("a.jpg", GOOD), "b": ("b.jpg", GOOD)}
    body = assert_problem(client.post("/v1/morph", params=params, files=files), 422, "validation-error")
    assert next(iter(params)) in body["detail"]


def test_morph_needs_both_images(client: TestClient) -> None:
    body = assert_problem(client.post("/v1/morph", files={"a": ("a.jpg", GOOD)}), 422, "validation-error")
    assert "b: Field required" in body["detail"]


def test_unknown_path_and_wrong_method(client: TestClient) -> None:
    assert_problem(client.get("/nope"), 404, "not-found")
    assert_problem(client.get("/v1/detect"), 405, "method-not-allowed")


@pytest.fixture
def app_with(make_settings: Callable[..., Settings]):
    def make(**overrides):
        return create_app(make_settings(**overrides))

    return make


def test_upload_over_the_byte_cap(app_with) -> None:
    noisy = encode(np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8), "PNG")
    assert len(noisy) > 100_000
    with TestClient(app_with(max_upload_bytes=100_000)) as client:
        body = assert_problem(client.post("/v1/detect", files={"image": ("big.png", noisy)}), 413, "payload-too-large")
        assert "100000-byte limit" in body["detail"]
        assert_still_serving(client)


def test_image_over_the_pixel_cap(app_with) -> None:
    with TestClient(app_with(max_image_pixels=100_000)) as client:
        big = encode(picture(400, 300), "PNG")
        body = assert_problem(client.post("/v1/detect", files={"image": ("wide.png", big)}), 413, "image-too-large")
        assert "120000 pixels" in body["detail"]
        assert_still_serving(client)


def test_unexpected_exception_is_a_500_with_an_id_in_the_log(app_with, caplog: pytest.LogCaptureFixture) -> None:
    app = app_with()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail")

    with TestClient(app) as client, caplog.at_level(logging.ERROR, logger="service.errors"):
        response = client.get("/boom")
        body = assert_problem(response, 500, "internal-error")
        assert "secret internal detail" not in response.text and "RuntimeError" not in response.text
        error_id = body["error_id"]
        assert error_id in body["detail"]
        [record] = [r for r in caplog.records if error_id in r.getMessage()]
        assert record.exc_info and "secret internal detail" in str(record.exc_info[1])
        assert_still_serving(client)


def _wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_overload_answers_503_with_retry_after_and_health_stays_responsive(app_with) -> None:
    """One inference thread and a queue of one: a third concurrent request is refused, not queued."""
    with TestClient(app_with(worker_threads=1, max_queue=1, retry_after_s=3)) as client:
        admission = client.app.state.admission
        release = threading.Event()

        async def occupy_the_only_thread() -> None:
            async with admission.admit():
                await admission.run(release.wait)

        hog = client.portal.start_task_soon(occupy_the_only_thread)
        try:
            _wait_until(lambda: admission.admitted == 1)
            queued: dict = {}
            waiter = threading.Thread(target=lambda: queued.update(
                r=client.post("/v1/detect", files={"image": ("q.jpg", GOOD)})))
            waiter.start()
            _wait_until(lambda: admission.admitted == 2)

            refused = client.post("/v1/detect", files={"image": ("x.jpg", GOOD)})
            body = assert_problem(refused, 503, "overloaded")
            assert refused.headers["retry-after"] == "3"
            assert "retry" in body["detail"]
            # The inference thread is busy; health checks never wait for it.
            start = time.perf_counter()
            assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
            assert time.perf_counter() - start < 1.0

            release.set()
            hog.result(timeout=5)
            waiter.join(timeout=10)
            assert queued["r"].status_code == 200
            assert_still_serving(client)
            assert admission.admitted == 0
        finally:
            release.set()  # never leave the pool blocked, or shutting the app down would hang


def test_a_tiff_tile_larger_than_the_pixel_cap_is_refused_before_decoding(client: TestClient) -> None:
    from bench.hostile import tiff_with_tile

    bomb = tiff_with_tile()  # declares 64x64, holds one 16384x16384 tile
    body = assert_problem(client.post("/v1/detect", files={"image": ("tile.tif", bomb)}), 413, "image-too-large")
    assert "16384x16384 tile" in body["detail"]
    ok = encode(picture(), "TIFF")  # an ordinary TIFF (one strip per image) still decodes
    assert client.post("/v1/detect", files={"image": ("ok.tif", ok)}).status_code == 200
