"""Start-up: bad settings and broken model files stop the process with one clear line; provider choice and
the GPU requirement are reported as they really are."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.__main__ import main
from service.main import create_app
from service.settings import Settings, SettingsError, load_settings
from tests.utils.images import variants
from tests.utils.models import write_manifest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def broken_models(models_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the fixture models that a test may damage."""
    return Path(shutil.copytree(models_dir, tmp_path / "models"))


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "no directory": (lambda d: shutil.rmtree(d), "does not exist (FACEDET_MODELS_DIR)"),
    "no manifest": (lambda d: (d / "manifest.json").unlink(), "manifest.json is missing"),
    "manifest not json": (lambda d: (d / "manifest.json").write_text("{oops"), "is not valid JSON"),
    "manifest wrong version": (lambda d: write_manifest(d, format_version=2), "format_version"),
    "model file missing": (lambda d: (d / "cnn.onnx").unlink(), "cnn.onnx is missing"),
    "model file truncated": (lambda d: (d / "dbvae_decoder.onnx").write_bytes(b"\x08"), "the manifest says"),
    "hash mismatch": (lambda d: _flip_a_byte(d / "dbvae_encoder.onnx"), "does not match the manifest"),
    "not onnx, hash matching": (lambda d: ((d / "cnn.onnx").write_bytes(b"garbage" * 100), write_manifest(d)),
                                "ONNX Runtime cannot load it"),
    "graphs swapped": (lambda d: write_manifest(d, models={
        "cnn": {"version": "c", "threshold": 0.5,
                "graphs": {"classifier": "dbvae_decoder.onnx", "scanner": "cnn_scan.onnx"}},
        "dbvae": {"version": "d", "threshold": 0.5,
                  "graphs": {"encoder": "dbvae_encoder.onnx", "decoder": "dbvae_decoder.onnx",
                             "scanner": "dbvae_scan.onnx"}}}),
        "do not match the contract for a classifier"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_broken_models_stop_start_up_with_one_line(case: str, broken_models: Path, monkeypatch, caplog) -> None:
    damage, phrase = DAMAGE[case]
    damage(broken_models)
    monkeypatch.setenv("FACEDET_MODELS_DIR", str(broken_models))
    with caplog.at_level(logging.ERROR):
        assert main([]) == 2
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    message = record.getMessage()
    assert message.startswith("cannot start: ") and phrase in message, message
    assert "\n" not in message and record.exc_info is None


@pytest.mark.parametrize(("env", "phrase"), [
    ({"FACEDET_MAX_UPLOAD_BYTES": "lots"}, "FACEDET_MAX_UPLOAD_BYTES='lots'"),
    ({"FACEDET_PORT": "70000"}, "FACEDET_PORT"),
    ({"FACEDET_DEFAULT_MODEL": "resnet"}, "FACEDET_DEFAULT_MODEL='resnet'"),
    ({"FACEDET_PROVIDERS": "CUDAExecutionProvidr"}, "unknown ONNX Runtime provider"),
    ({"FACEDET_THRESHOLD": "1.5"}, "FACEDET_THRESHOLD"),
    ({"FACEDET_MAX_IMAGE_PIXELS": "1000000000"}, "FACEDET_MAX_IMAGE_PIXELS"),
    ({"FACEDET_WORKER_THREADS": "0"}, "FACEDET_WORKER_THREADS"),
])
def test_bad_settings_stop_start_up_with_one_line(env: dict, phrase: str, models_dir: Path, monkeypatch,
                                                   caplog) -> None:
    monkeypatch.setenv("FACEDET_MODELS_DIR", str(models_dir))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with caplog.at_level(logging.ERROR):
        assert main([]) == 2
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage().startswith("cannot start: bad setting") and phrase in record.getMessage()
    assert record.exc_info is None


def test_the_real_process_prints_one_line_and_exits_2(broken_models: Path) -> None:
    """What an operator (or `docker logs`) sees: one line, no traceback, exit status 2."""
    _flip_a_byte(broken_models / "cnn.onnx")
    env = {**os.environ, "FACEDET_MODELS_DIR": str(broken_models)}
    for extra, phrase in (({}, "cnn.onnx sha256"), ({"FACEDET_WORKER_THREADS": "none"}, "FACEDET_WORKER_THREADS")):
        result = subprocess.run([sys.executable, "-m", "service"], cwd=REPO, env={**env, **extra},
                                capture_output=True, text=True, timeout=60)
        lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        assert result.returncode == 2
        assert len(lines) == 1 and "cannot start: " in lines[0] and phrase in lines[0], lines
        assert "Traceback" not in result.stderr


def test_settings_from_environment(monkeypatch) -> None:
    monkeypatch.setenv("FACEDET_PROVIDERS", "CUDAExecutionProvider, CPUExecutionProvider")
    monkeypatch.setenv("FACEDET_THRESHOLD", "0.25")
    monkeypatch.setenv("FACEDET_MAX_UPLOAD_BYTES", "2048")
    settings = load_settings(port=9000)
    assert settings.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert (settings.threshold, settings.max_upload_bytes, settings.port) == (0.25, 2048, 9000)
    assert settings.max_upload_bytes != Settings.model_fields["max_upload_bytes"].default
    assert Settings.model_fields["max_upload_bytes"].default == 10_000_000
    with pytest.raises(SettingsError):
        load_settings(port=0)


def test_unavailable_provider_falls_back_and_reports_what_is_really_used(make_settings) -> None:
    # The default asks for CUDA first; this onnxruntime has no CUDA, so the sessions must say CPU.
    settings = make_settings(providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    with TestClient(create_app(settings)) as client:
        models = client.get("/v1/models").json()
        assert models["requested_providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
        used = {g["providers"][0] for m in models["models"] for g in m["graphs"].values()}
        assert used == {"CPUExecutionProvider"}
        assert client.get("/readyz").status_code == 200
        body = client.post("/v1/detect", files={"image": ("x.png", variants(0)["rgb.png"])}).json()
        assert body["provider"] == "CPUExecutionProvider"


def test_require_gpu_fails_readiness_instead_of_falling_back(make_settings) -> None:
    settings = make_settings(providers=["CUDAExecutionProvider", "CPUExecutionProvider"], require_gpu=True)
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.headers["content-type"] == "application/problem+json"
        assert "FACEDET_REQUIRE_GPU" in ready.json()["detail"]
        assert "CPUExecutionProvider" in ready.json()["detail"]
        assert "facedet_ready 0.0" in client.get("/metrics").text


def test_threshold_override_changes_the_decision(make_settings) -> None:
    blob = variants(1)["rgb.png"]  # dbvae probability about 0.98 with the fixture models
    with TestClient(create_app(make_settings(threshold=0.99))) as client:
        body = client.post("/v1/detect", files={"image": ("x.png", blob)}).json()
        assert body["threshold"] == 0.99
        assert 0.9 < body["results"][0]["face_probability"] < 0.99 and body["results"][0]["is_face"] is False
        assert client.get("/v1/models").json()["models"][0]["threshold"] == 0.99


def test_default_model_setting(make_settings) -> None:
    with TestClient(create_app(make_settings(default_model="cnn"))) as client:
        assert client.post("/v1/detect", files={"image": ("x.png", variants(0)["rgb.png"])}).json()["model"] == "cnn"



def test_warm_up_is_not_counted_as_traffic(make_settings) -> None:
    with TestClient(create_app(make_settings())) as client:
        models = client.get("/v1/models").json()["models"]
        assert all(g["warmed_batch_sizes"] for m in models for g in m["graphs"].values())
        assert 'facedet_inference_batch_size_count{graph="dbvae.encoder"}' not in client.get("/metrics").text
        client.post("/v1/detect", files={"image": ("x.png", variants(0)["rgb.png"])})
        assert 'facedet_inference_batch_size_count{graph="dbvae.encoder"} 1.0' in client.get("/metrics").text
