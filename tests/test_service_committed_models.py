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
    return [("astronaut.jpg", encode(data.astronaut(), "JPEG", quality=90)),
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
        assert result["is_face"] == (result["face_probability"] >= batch["threshold"])


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
