"""Uploaded files -> one model-input batch. Reading is async; decoding runs later in the inference pool."""

from __future__ import annotations

import numpy as np
from fastapi import UploadFile

from service.preprocess import decode, to_model_input

Payload = tuple[str, bytes]  # (label used in error messages, encoded bytes)


async def read(upload: UploadFile, label: str) -> Payload:
    name = f" '{upload.filename}'" if upload.filename else ""
    return f"{label}{name}", await upload.read()


def decode_batch(payloads: list[Payload], size: int, max_pixels: int) -> np.ndarray:
    """Decode every payload (the first bad one raises its ProblemError) -> float32 [N, 3, size, size]."""
    return to_model_input([decode(data, size=size, max_pixels=max_pixels, label=label) for label, data in payloads])
