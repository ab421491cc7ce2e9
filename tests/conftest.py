"""Fixtures for the service tests (tests/test_service_*.py): fixture models, settings, a live app.

Service imports happen inside the fixtures, so collecting the training tests never needs the service's
dependencies.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from service.settings import Settings
    from tests.utils.models import Reference


@pytest.fixture(autouse=True)
def _no_facedet_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A FACEDET_* variable in the developer's shell must not change what the service tests see."""
    if request.node.path.name.startswith("test_service_"):
        for name in list(os.environ):
            if name.startswith("FACEDET_"):
                monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.utils.models import build_models

    return build_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def reference(models_dir: Path) -> Reference:
    from tests.utils.models import Reference

    return Reference(models_dir)


@pytest.fixture
def make_settings(models_dir: Path) -> Callable[..., Settings]:
    from service.settings import Settings

    def make(**overrides) -> Settings:
        return Settings(**{"models_dir": models_dir, "providers": ["CPUExecutionProvider"], **overrides})

    return make


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One live app (lifespan run: sessions opened, warmed up) shared by a test module."""
    from fastapi.testclient import TestClient

    from service.main import create_app
    from service.settings import Settings
    from tests.utils.models import build_models

    models = build_models(tmp_path_factory.mktemp("module_models"))
    settings = Settings(models_dir=models, providers=["CPUExecutionProvider"], max_images_per_request=8,
                        max_morph_steps=12)
    with TestClient(create_app(settings)) as test_client:
        yield test_client
