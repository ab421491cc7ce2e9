"""Every endpoint's happy path on the real app (lifespan included), checked against values computed
independently: the training pipeline's pre-processing and the same ONNX files run directly."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.utils.images import variants
from tests.utils.models import Reference
from training.data.image import load_image, to_model_input

IMAGES = variants(0)


def model_input(*blobs: bytes) -> np.ndarray:
    return to_model_input(np.stack([load_image(b) for b in blobs]))


def pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def expected_pixels(chw: np.ndarray) -> np.ndarray:
    return np.rint(chw.transpose(1, 2, 0) * 255).astype(int)


@pytest.mark.parametrize("name", list(IMAGES))
def test_detect_every_format_and_mode(client: TestClient, reference: Reference, name: str) -> None:
    response = client.post("/v1/detect", files={"image": (name, IMAGES[name])})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model"], body["model_version"], body["threshold"]) == ("dbvae", "dbvae-test0001", 0.5)
    assert body["provider"] == "CPUExecutionProvider"
    [result] = body["results"]
    expected = reference.probability("dbvae", model_input(IMAGES[name]))[0]
    assert result["filename"] == name
    assert 0.0 <= result["face_probability"] <= 1.0
    assert result["face_probability"] == pytest.approx(expected, abs=1e-6)
    assert result["is_face"] == (result["face_probability"] >= 0.5)


def test_detect_with_the_standard_cnn(client: TestClient, reference: Reference) -> None:
    blob = variants(4)["rgb.jpg"]
    body = client.post("/v1/detect", params={"model": "cnn"}, files={"image": ("x.jpg", blob)}).json()
    assert (body["model"], body["model_version"]) == ("cnn", "cnn-test0001")
    expected = reference.probability("cnn", model_input(blob))[0]
    assert body["results"][0]["face_probability"] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("model", ["dbvae", "cnn"])
def test_batch_answers_equal_one_by_one_answers_in_order(client: TestClient, model: str) -> None:
    blobs = [(f"{seed}.{fmt}", variants(seed)[f"rgb.{fmt}"]) for seed, fmt in
             [(0, "png"), (1, "jpg"), (2, "webp"), (3, "bmp"), (4, "tiff"), (5, "png"), (6, "jpg")]]
    batch = client.post("/v1/detect", params={"model": model}, files=[("image", b) for b in blobs]).json()
    singles = [client.post("/v1/detect", params={"model": model}, files={"image": b}).json()["results"][0]
               for b in blobs]
    assert [r["filename"] for r in batch["results"]] == [name for name, _ in blobs]
    for got, alone in zip(batch["results"], singles):
        assert got["face_probability"] == pytest.approx(alone["face_probability"], abs=1e-6)
        assert got["is_face"] == alone["is_face"]
    decisions = {r["is_face"] for r in batch["results"]}
    assert decisions == {True, False}, "the fixture images should fall on both sides of the threshold"


def test_reconstruct_returns_the_decoded_latent_mean(client: TestClient, reference: Reference) -> None:
    blob = IMAGES["rgb.jpg"]
    response = client.post("/v1/reconstruct", files={"image": ("face.jpg", blob)})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-model-version"] == "dbvae-test0001"
    with Image.open(io.BytesIO(response.content)) as im:
        assert (im.format, im.mode, im.size) == ("PNG", "RGB", (64, 64))
    expected = expected_pixels(reference.decode(reference.mu(model_input(blob)))[0])
    assert np.abs(pixels(response.content) - expected).max() <= 1


def _reconstruction(client: TestClient, blob: bytes) -> np.ndarray:
    return pixels(client.post("/v1/reconstruct", files={"image": ("x.png", blob)}).content)


def test_morph_png_strip_runs_from_a_to_b(client: TestClient, reference: Reference) -> None:
    a, b = variants(1)["rgb.png"], variants(2)["rgb.jpg"]
    response = client.post("/v1/morph", params={"steps": 5}, files={"a": ("a.png", a), "b": ("b.jpg", b)})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    strip = pixels(response.content)
    assert strip.shape == (64, 5 * 64, 3)
    frames = [strip[:, i * 64:(i + 1) * 64] for i in range(5)]
    assert np.abs(frames[0] - _reconstruction(client, a)).max() <= 1
    assert np.abs(frames[-1] - _reconstruction(client, b)).max() <= 1
    mu = reference.mu(model_input(a, b))
    middle = expected_pixels(reference.decode(((mu[0] + mu[1]) / 2)[None])[0])
    assert np.abs(frames[2] - middle).max() <= 1
    assert float(response.headers["x-latent-distance"]) == pytest.approx(np.linalg.norm(mu[1] - mu[0]), rel=1e-4)


def test_morph_default_is_eight_frames(client: TestClient) -> None:
    blob = variants(3)["rgb.png"]
    response = client.post("/v1/morph", files={"a": ("a.png", blob), "b": ("b.png", IMAGES["rgb.png"])})
    assert pixels(response.content).shape == (64, 8 * 64, 3)


def test_morph_gif_plays_there_and_back(client: TestClient) -> None:
    a, b = variants(1)["rgb.png"], variants(6)["rgb.png"]
    response = client.post("/v1/morph", params={"steps": 6, "format": "gif"}, files={"a": ("a", a), "b": ("b", b)})
    assert response.status_code == 200 and response.headers["content-type"] == "image/gif"
    with Image.open(io.BytesIO(response.content)) as gif:
        assert (gif.format, gif.size, gif.n_frames, gif.is_animated) == ("GIF", (64, 64), 10, True)  # 6 + 4 back
        assert gif.info["loop"] == 0  # forever
        gif.seek(0)
        first = np.asarray(gif.convert("RGB")).astype(int)
    # GIF keeps at most 256 colours, so compare on average rather than per pixel.
    assert np.abs(first - _reconstruction(client, a)).mean() < 4


def test_morph_json_frames_and_latent_distance(client: TestClient, reference: Reference) -> None:
    a, b = variants(1)["rgb.png"], variants(5)["rgb.png"]
    response = client.post("/v1/morph", params={"steps": 4, "format": "json"}, files={"a": ("a", a), "b": ("b", b)})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert (body["steps"], body["size"], body["model_version"], len(body["frames"])) == (4, 64, "dbvae-test0001", 4)
    frames = [pixels(base64.b64decode(f)) for f in body["frames"]]
    assert all(f.shape == (64, 64, 3) for f in frames)
    # Distances to both ends, from the decoded frames themselves (the same floats the PNGs were rounded from).
    z = reference.mu(model_input(a, b)).astype(np.float64)
    t = np.linspace(0.0, 1.0, 4)[:, None]
    decoded = reference.decode((1 - t) * z[0] + t * z[1]).reshape(4, -1).astype(np.float64)
    to_b = np.sqrt(((decoded - decoded[-1]) ** 2).mean(1))
    assert [d["to_b"] for d in body["frame_distances"]] == pytest.approx(list(to_b), abs=1e-6)
    assert body["frame_distances"][0]["to_a"] == 0.0 and body["frame_distances"][-1]["to_b"] == 0.0
    assert np.array_equal(frames[0], _reconstruction(client, a))
    assert np.array_equal(frames[-1], _reconstruction(client, b))
    mu = reference.mu(model_input(a, b))
    assert body["latent_distance"] == pytest.approx(float(np.linalg.norm(mu[1] - mu[0])), rel=1e-5)


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    graphs = ("cnn.classifier", "cnn.scanner", "dbvae.encoder", "dbvae.decoder", "dbvae.scanner")
    assert ready.json() == {"status": "ready", "providers": {g: "CPUExecutionProvider" for g in graphs}}


def test_models_lists_what_is_loaded(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    assert body["input"]["size"] == 64 and body["latent_dim"] == 8
    assert body["localiser"]["threshold"] == 0.9 and body["localiser"]["crop_max_side"] == 128
    assert body["requested_providers"] == ["CPUExecutionProvider"]
    models = {m["name"]: m for m in body["models"]}
    assert (models["dbvae"]["version"], models["dbvae"]["default"]) == ("dbvae-test0001", True)
    assert (models["cnn"]["version"], models["cnn"]["default"]) == ("cnn-test0001", False)
    assert models["cnn"]["metrics"] == {"val": {"accuracy": 0.5, "roc_auc": 0.5}}
    classifier = models["cnn"]["graphs"]["classifier"]
    assert classifier["file"] == "cnn.onnx" and classifier["providers"] == ["CPUExecutionProvider"]
    assert classifier["inputs"] == [{"name": "image", "shape": ["N", 3, 64, 64], "type": "tensor(float)"}]
    # Warm-up covered every batch size the service pads to (client fixture: 8 images, 12 morph steps).
    assert classifier["warmed_batch_sizes"] == [1, 2, 4, 8]
    assert models["dbvae"]["graphs"]["decoder"]["warmed_batch_sizes"] == [1, 2, 4, 8, 12]
    assert {o["name"] for o in models["dbvae"]["graphs"]["encoder"]["outputs"]} == {"logit", "mu", "logvar"}


def _sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            return float(m.group(2))
    return 0.0


def test_metrics_count_requests_batches_errors_and_providers(client: TestClient) -> None:
    before = client.get("/metrics").text
    blobs = [("image", (f"{i}.png", variants(i)["rgb.png"])) for i in range(3)]
    assert client.post("/v1/detect", files=blobs).status_code == 200
    assert client.post("/v1/detect", files={"image": ("x.txt", b"not an image")}).status_code == 415
    after = client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text

    def delta(name: str, **labels: str) -> float:
        return _sample(text, name, **labels) - _sample(before, name, **labels)

    assert delta("facedet_requests_total", endpoint="/v1/detect", method="POST", status="200") == 1
    assert delta("facedet_requests_total", endpoint="/v1/detect", method="POST", status="415") == 1
    assert delta("facedet_errors_total", type="unsupported-image") == 1
    assert delta("facedet_inference_batch_size_count", graph="dbvae.encoder") == 1
    assert delta("facedet_inference_batch_size_sum", graph="dbvae.encoder") == 3
    assert delta("facedet_request_duration_seconds_count", endpoint="/v1/detect") == 2
    assert _sample(text, "facedet_execution_provider", graph="dbvae.decoder", provider="CPUExecutionProvider") == 1
    assert "facedet_ready 1.0" in text


def test_openapi_docs_with_examples(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/v1/detect", "/v1/reconstruct", "/v1/morph", "/healthz", "/readyz", "/metrics", "/v1/models"} <= set(spec["paths"])
    detect = spec["paths"]["/v1/detect"]["post"]
    assert {"413", "415", "422", "503"} <= set(detect["responses"])
    assert spec["components"]["schemas"]["DetectResponse"]["examples"]
    model_param = next(p for p in detect["parameters"] if p["name"] == "model")
    assert model_param["examples"]


def test_unversioned_upload_paths_still_answer_and_are_marked_deprecated(client: TestClient) -> None:
    """The API moved under /v1; the paths clients already call keep working, with the same answers."""
    blob = IMAGES["rgb.png"]
    new = client.post("/v1/detect", files={"image": ("x.png", blob)}).json()
    old = client.post("/detect", files={"image": ("x.png", blob)}).json()
    assert old == new
    assert client.post("/reconstruct", files={"image": ("x.png", blob)}).content == \
        client.post("/v1/reconstruct", files={"image": ("x.png", blob)}).content
    assert client.post("/morph", files={"a": ("a", blob), "b": ("b", blob)}).status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/detect", "/reconstruct", "/morph"):
        assert paths[path]["post"]["deprecated"] is True
        assert "deprecated" not in paths["/v1" + path]["post"]
    assert "/models" not in paths and {"/healthz", "/readyz", "/metrics", "/v1/models"} <= set(paths)


def test_a_grey_decoder_is_served_as_one_channel_pictures(tmp_path, reference: Reference) -> None:
    """A manifest that marks the DB-VAE's decoder grey (trained on grey faces: its graph gives R = G = B) gets
    one-channel PNGs and GIF frames, its first channel, and /v1/models says so."""
    import json

    from service.main import create_app
    from service.settings import Settings
    from tests.utils.models import build_models

    models = build_models(tmp_path / "models")
    manifest = json.loads((models / "manifest.json").read_text())
    manifest["models"]["dbvae"]["output_colour"] = "grey"
    (models / "manifest.json").write_text(json.dumps(manifest))
    a, b = variants(1)["rgb.png"], variants(2)["rgb.jpg"]
    with TestClient(create_app(Settings(models_dir=models, providers=["CPUExecutionProvider"]))) as grey:
        listed = {m["name"]: m["output_colour"] for m in grey.get("/v1/models").json()["models"]}
        assert listed == {"cnn": None, "dbvae": "grey"}
        with Image.open(io.BytesIO(grey.post("/v1/reconstruct", files={"image": ("a.png", a)}).content)) as im:
            assert (im.format, im.mode, im.size) == ("PNG", "L", (64, 64))
            got = np.asarray(im).astype(int)
        assert np.abs(got - expected_pixels(reference.decode(reference.mu(model_input(a)))[0])[:, :, 0]).max() <= 1
        strip = grey.post("/v1/morph", params={"steps": 3}, files={"a": ("a", a), "b": ("b", b)}).content
        gif = grey.post("/v1/morph", params={"steps": 3, "format": "gif"}, files={"a": ("a", a), "b": ("b", b)})
        with Image.open(io.BytesIO(strip)) as im, Image.open(io.BytesIO(gif.content)) as anim:
            assert (im.mode, im.size) == ("L", (3 * 64, 64))
            assert np.abs(np.asarray(im).astype(int)[:, :64] - got).max() <= 1
            assert (anim.n_frames, anim.convert("L").size) == (4, (64, 64))
