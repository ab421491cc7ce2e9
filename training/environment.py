"""The environment variables training reads, read here and nowhere else (pydantic-settings, as the service's
settings are): FACEDET_CACHE and FACEDET_DATA_URL."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

# The MIT 6.S191 lab's train_face.h5 (CelebA faces + ImageNet non-faces).
DEFAULT_DATA_URL = "https://www.dropbox.com/s/hlz8atheyozp1yx/train_face.h5?dl=1"


class Environment(BaseSettings):
    # extra="ignore": the service's FACEDET_* variables may be set in the same shell.
    model_config = SettingsConfigDict(env_prefix="FACEDET_", extra="ignore")

    cache: Path = Path.home() / ".cache" / "facedet"  # the built-in set and converted folders
    data_url: str = DEFAULT_DATA_URL  # where python -m training.fetch downloads the lab file from


def environment() -> Environment:
    return Environment()
