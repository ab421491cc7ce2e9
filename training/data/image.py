"""Image decoding and the canonical pre-processing shared (by contract, not by import) with the service.

Every image the models see, in training, evaluation and serving, goes through the same steps:
decode (a JPEG at a reduced DCT scale) -> apply EXIF orientation -> RGB -> centre square crop -> bilinear
resize to 64x64 -> uint8 HWC.
`service/preprocess.py` re-implements exactly these steps (the service never imports training);
a test decodes the same files with both and asserts identical arrays.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from training.contract import IMAGE_SIZE

# Decompression-bomb guard for training data: Pillow only warns below 2x its own limit. The same cap as the
# service's default FACEDET_MAX_IMAGE_PIXELS (tests/test_contract.py), so what one side reads the other does.
MAX_PIXELS = 50_000_000


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. 16/32-bit grey is scaled (not clipped); alpha is composited on white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im).astype(np.int64)
        # 'I' can hold 16-bit data (PNG) or 8-bit data promoted; scale only if it exceeds 8 bits.
        if arr.max(initial=0) > 255:
            arr = arr >> 8
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
    elif im.mode == "F":
        im = Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8), mode="L")
    if im.mode in ("P", "PA") or (im.mode == "L" and "transparency" in im.info):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "RGBa", "La"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB")


def open_photo(path: str | Path) -> Image.Image:
    """A photo as the service sees it: EXIF orientation applied, then RGB (alpha composited on white)."""
    with Image.open(path) as im:
        return to_rgb(ImageOps.exif_transpose(im))


def centre_square(im: Image.Image) -> Image.Image:
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return im.crop((left, top, left + s, top + s))


def prepare(im: Image.Image, size: int = IMAGE_SIZE) -> np.ndarray:
    """Decoded Pillow image -> uint8 [size, size, 3] RGB, the canonical model input before scaling."""
    im = ImageOps.exif_transpose(im)
    im = to_rgb(im)
    im = centre_square(im)
    im = im.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def load_image(source: str | Path | bytes, size: int = IMAGE_SIZE) -> np.ndarray:
    """Decode a file path or encoded bytes -> uint8 [size, size, 3] RGB. Raises ValueError if unreadable."""
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fp) as im:
                if im.width * im.height > MAX_PIXELS:
                    raise ValueError(f"{im.width}x{im.height} exceeds {MAX_PIXELS} pixels")
                # A JPEG decodes at the smallest DCT scale (1/2, 1/4 or 1/8) that keeps both sides at least
                # twice the model size (other formats ignore this): a 640x480 photo decodes 4x faster into a
                # quarter of the memory, and after the bilinear resize the pixels differ from a full decode
                # by 0.24/255 on average (at most 2/255) on the load benchmark's photo.
                im.draft(None, (2 * size, 2 * size))
                im.load()
                return prepare(im, size)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"cannot decode image: {exc}") from exc


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] RGB -> float32 [N, 3, H, W] in [0, 1], the models' input contract."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)
