"""32 requests at once give exactly the answers they give one at a time."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from fastapi.testclient import TestClient

from tests.utils.images import variants

FORMATS = ["rgb.png", "rgb.jpg", "rgb.webp", "palette.gif", "grey16.png", "rgba.png", "cmyk.jpg", "exif_rotated.jpg"]


def _requests() -> list[tuple[str, dict]]:
    calls = []
    for i in range(32):
        blob = variants(i % 8)[FORMATS[i % len(FORMATS)]]
        if i % 4 == 3:
            calls.append(("/v1/reconstruct", {"files": {"image": (f"{i}", blob)}}))
        elif i % 4 == 2:
            batch = [("image", (f"{i}-{j}", variants((i + j) % 8)["rgb.png"])) for j in range(1 + i % 5)]
            calls.append(("/v1/detect", {"files": batch, "params": {"model": "cnn"}}))
        else:
            calls.append(("/v1/detect", {"files": {"image": (f"{i}", blob)}}))
    return calls


def _answer(client: TestClient, call: tuple[str, dict]) -> tuple[int, bytes]:
    path, kwargs = call
    response = client.post(path, **kwargs)
    return response.status_code, response.content


def test_32_parallel_requests_match_sequential_ones(client: TestClient) -> None:
    calls = _requests()
    sequential = [_answer(client, c) for c in calls]
    with ThreadPoolExecutor(max_workers=32) as pool:
        parallel = list(pool.map(lambda c: _answer(client, c), calls))
    assert all(status == 200 for status, _ in sequential)
    # Same bytes: JSON probabilities and reconstructed PNGs alike (batches are padded to fixed sizes,
    # so a request's numbers do not depend on what else is in flight).
    assert parallel == sequential
    assert client.app.state.admission.admitted == 0
