"""Uploaded files -> one model-input batch. Reading is async; decoding runs in the inference pool, or on the
event loop for requests small enough that the hand-off to a thread would cost more than the work."""

from __future__ import annotations

import numpy as np
from fastapi import UploadFile
from PIL import Image

from service.preprocess import decode, load, open_image, to_model_input

Payload = tuple[str, bytes]  # (label used in error messages, encoded bytes)


async def read(upload: UploadFile, label: str) -> Payload:
    name = f" '{upload.filename}'" if upload.filename else ""
    return f"{label}{name}", await upload.read()


def decode_batch(payloads: list[Payload], size: int, max_pixels: int) -> np.ndarray:
    """Decode every payload (the first bad one raises its ProblemError) -> float32 [N, 3, size, size]."""
    return to_model_input([decode(data, size=size, max_pixels=max_pixels, label=label) for label, data in payloads])


def open_small(payloads: list[Payload], limit: int, max_pixels: int) -> list[tuple[str, Image.Image]] | None:
    """The request's images opened (headers only) if they hold at most `limit` pixels together, else None.

    Files larger than an uncompressed RGBA image of `limit` pixels are not even opened (they cannot be
    that small without unusual metadata, and then they simply take the pool). A bad file raises its
    ProblemError here, as it would in the pool.
    """
    if limit <= 0 or sum(len(data) for _, data in payloads) > 4 * limit:
        return None
    images = [(label, open_image(data, max_pixels=max_pixels, label=label)) for label, data in payloads]
    if sum(im.width * im.height for _, im in images) > limit:
        return None
    return images


def load_batch(images: list[tuple[str, Image.Image]], size: int) -> np.ndarray:
    """Opened images -> float32 [N, 3, size, size]."""
    return to_model_input([load(im, size=size, label=label) for label, im in images])
