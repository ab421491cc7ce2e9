"""The models committed in models/ (exported by training) load, verify and answer through the service.

Skipped only while models/manifest.json does not exist yet.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.main import create_app
from service.manifest import load_manifest
from service.settings import DEFAULT_MODELS_DIR, Settings
from tests.utils.images import encode, picture

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
pytestmark = pytest.mark.skipif(not (MODELS / "manifest.json").exists(),
                                reason="models/manifest.json is not there yet (training exports it)")


def _photos() -> list[tuple[str, bytes]]:
    try:
        from skimage import data  # ships its sample pictures; no download
    except ImportError:  # the service's own environment has no scikit-image
        return [(f"{i}.jpg", encode(picture(256, 256, seed=i), "JPEG")) for i in range(3)]
    return [("rocket.jpg", encode(data.rocket(), "JPEG", quality=90)),
            ("coffee.png", encode(data.coffee(), "PNG")),
            ("chelsea.webp", encode(data.chelsea(), "WEBP", quality=90))]


@pytest.fixture(scope="module")
def committed() -> Iterator[TestClient]:
    settings = Settings(providers=["CPUExecutionProvider"])
    assert settings.models_dir == DEFAULT_MODELS_DIR == MODELS, "the default settings serve models/"
    with TestClient(create_app(settings)) as client:
        yield client


def test_manifest_verifies_and_the_service_reports_it(committed: TestClient) -> None:
    manifest = json.loads((MODELS / "manifest.json").read_text())
    load_manifest(MODELS)  # every file's size and sha256 match
    assert committed.get("/readyz").status_code == 200
    body = committed.get("/v1/models").json()
    assert body["latent_dim"] == manifest["latent_dim"] and body["input"]["size"] == manifest["input"]["size"]
    versions = {m["name"]: m["version"] for m in body["models"]}
    assert versions == {name: manifest["models"][name]["version"] for name in ("cnn", "dbvae")}
    for model in body["models"]:
        assert model["metrics"] == manifest["models"][model["name"]]["metrics"]


@pytest.mark.parametrize("model", ["dbvae", "cnn"])
def test_detect_batch_equals_singles(committed: TestClient, model: str) -> None:
    photos = _photos()
    batch = committed.post("/v1/detect", params={"model": model}, files=[("image", p) for p in photos]).json()
    assert batch["model"] == model and len(batch["results"]) == len(photos)
    for photo, result in zip(photos, batch["results"]):
        alone = committed.post("/v1/detect", params={"model": model}, files={"image": photo}).json()["results"][0]
        assert 0.0 <= result["face_probability"] <= 1.0
        assert result["face_probability"] == pytest.approx(alone["face_probability"], abs=1e-5)
        assert result["is_face"] == bool(result["faces"])
        if result["faces"]:  # the best face's score; without one, the best window's, which may lack neighbours
            assert result["face_probability"] == result["faces"][0]["score"] >= result["threshold"]
        assert result["faces"] == alone["faces"]


def test_reconstruct_and_morph(committed: TestClient) -> None:
    size = committed.get("/v1/models").json()["input"]["size"]
    (_, a), (_, b) = _photos()[:2]
    rec = committed.post("/v1/reconstruct", files={"image": ("a", a)})
    assert rec.status_code == 200
    with Image.open(io.BytesIO(rec.content)) as im:
        assert im.size == (size, size)
        rec_a = np.asarray(im.convert("RGB")).astype(int)
    morph = committed.post("/v1/morph", params={"steps": 5, "format": "json"}, files={"a": ("a", a), "b": ("b", b)})
    frames = morph.json()["frames"]
    assert len(frames) == 5 and morph.json()["latent_distance"] > 0
    with Image.open(io.BytesIO(base64.b64decode(frames[0]))) as first:
        assert np.abs(np.asarray(first.convert("RGB")).astype(int) - rec_a).max() <= 1


def lfw_face(i: int, side: int) -> Image.Image:
    """Face i of scikit-image's LFW subset (a training face), scaled to side x side RGB."""
    from skimage import data

    face = (data.lfw_subset()[i] * 255).round().astype(np.uint8)
    return Image.fromarray(face).convert("RGB").resize((side, side), Image.Resampling.BILINEAR)


def photo_with_face(i: int, at: tuple[int, int], side: int = 96) -> bytes:
    """A real photo (scikit-learn's china.jpg at 480x360) with LFW face i pasted in at `at`."""
    from sklearn.datasets import load_sample_image

    scene = Image.fromarray(load_sample_image("china.jpg")).resize((480, 360))
    scene.paste(lfw_face(i, side), at)
    return encode(np.asarray(scene), "PNG")


def overlap(box: dict, x: int, y: int, side: int) -> float:
    x0, y0 = max(box["x"], x), max(box["y"], y)
    x1, y1 = min(box["x"] + box["width"], x + side), min(box["y"] + box["height"], y + side)
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / (box["width"] * box["height"] + side * side - inter)


@pytest.mark.parametrize("model", ["dbvae", "cnn"])
def test_a_face_crop_is_one_face_that_fills_it(committed: TestClient, model: str) -> None:
    crop = encode(np.asarray(lfw_face(0, 64)), "PNG")
    result = committed.post("/v1/detect", params={"model": model}, files={"image": ("f.png", crop)}).json()["results"][0]
    assert result["is_face"] and [f["box"] for f in result["faces"]] == [{"x": 0, "y": 0, "width": 64, "height": 64}]


@pytest.mark.parametrize("model", ["dbvae", "cnn"])
def test_a_face_in_a_photo_is_found_where_it_is(committed: TestClient, model: str) -> None:
    photo = photo_with_face(0, (200, 120))
    result = committed.post("/v1/detect", params={"model": model}, files={"image": ("p.png", photo)}).json()["results"][0]
    best = result["faces"][0]
    assert overlap(best["box"], 200, 120, 96) >= 0.5 and best["score"] >= result["threshold"]
    # The scene alone (a face-free photo of the built-in set's non-faces): 200, no faces.
    from sklearn.datasets import load_sample_image

    scene = encode(np.asarray(Image.fromarray(load_sample_image("china.jpg")).resize((480, 360))), "PNG")
    response = committed.post("/v1/detect", params={"model": model}, files={"image": ("s.png", scene)})
    assert response.status_code == 200
    assert response.json()["results"][0]["faces"] == [] and response.json()["results"][0]["is_face"] is False


def test_morph_of_two_photos_uses_their_faces(committed: TestClient) -> None:
    a, b = photo_with_face(0, (200, 120)), photo_with_face(5, (60, 200))
    body = committed.post("/v1/morph", params={"steps": 8, "format": "json"},
                          files={"a": ("a.png", a), "b": ("b.png", b)}).json()
    to_b = [d["to_b"] for d in body["frame_distances"]]
    assert all(later < earlier for earlier, later in zip(to_b, to_b[1:]))  # the distance to b falls every frame
    assert body["box_a"]["source"] == body["box_b"]["source"] == "found"
    assert overlap(body["box_a"]["box"], 200, 120, 96) >= 0.5 and overlap(body["box_b"]["box"], 60, 200, 96) >= 0.5
    rec = committed.post("/v1/reconstruct", files={"image": ("a.png", a)})
    assert rec.headers["X-Face-Source"] == "found"
