"""Real encoded images for the tests, made with numpy and Pillow: every format and mode the service accepts,
and the bad inputs it must refuse."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def picture(width: int = 96, height: int = 80, seed: int = 0) -> np.ndarray:
    """uint8 [H, W, 3]: smooth gradients plus a bright disc and a dark bar, different for every seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    base = rng.uniform(0, 255, 3)
    slope = rng.uniform(-2, 2, (3, 2))
    img = base + slope[:, 0] * x[..., None] + slope[:, 1] * y[..., None]
    cx, cy, r = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height, rng.uniform(0.15, 0.3) * min(width, height)
    img[(x - cx) ** 2 + (y - cy) ** 2 < r**2] = rng.uniform(150, 255, 3)
    top = int(rng.uniform(0.1, 0.8) * height)
    img[top:top + max(2, height // 10), :] = rng.uniform(0, 80, 3)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(im: Image.Image | np.ndarray, fmt: str, **params) -> bytes:
    if isinstance(im, np.ndarray):
        im = Image.fromarray(im)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **params)
    return buf.getvalue()


def with_orientation(arr: np.ndarray, fmt: str, orientation: int = 6, **params) -> bytes:
    """The stored pixels are `arr`; the EXIF tag says a viewer must rotate them (6: 90 degrees clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(arr, fmt, exif=exif, **params)


def variants(seed: int = 0) -> dict[str, bytes]:
    """One image per accepted format and per awkward mode, all of the same picture."""
    arr = picture(seed=seed)
    rgb = Image.fromarray(arr)
    grey = rgb.convert("L")
    grey16 = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)  # mode I;16
    rgba = rgb.convert("RGBA")
    alpha = np.asarray(rgba).copy()
    alpha[:, : arr.shape[1] // 3, 3] = 0  # left third fully transparent: must come out white
    alpha[:, arr.shape[1] // 3: 2 * arr.shape[1] // 3, 3] = 128
    rgba = Image.fromarray(alpha)
    palette = rgb.quantize(colors=16)
    palette_t = palette.copy()
    palette_t.info["transparency"] = 0
    return {
        "rgb.png": encode(rgb, "PNG"),
        "rgb.jpg": encode(rgb, "JPEG", quality=92),
        "rgb.webp": encode(rgb, "WEBP", quality=90),
        "lossless.webp": encode(rgb, "WEBP", lossless=True),
        "palette.gif": encode(palette, "GIF"),
        "rgb.bmp": encode(rgb, "BMP"),
        "rgb.tiff": encode(rgb, "TIFF"),
        "grey.png": encode(grey, "PNG"),
        "grey16.png": encode(grey16, "PNG"),
        "rgba.png": encode(rgba, "PNG"),
        "la.png": encode(rgba.convert("LA"), "PNG"),
        "palette_transparent.png": encode(palette_t, "PNG", transparency=0),
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG", quality=92),
        "grey.tiff": encode(grey, "TIFF"),
        "exif_rotated.jpg": with_orientation(arr, "JPEG", 6, quality=92),
        "exif_rotated.png": with_orientation(arr, "PNG", 6),
        "tall.png": encode(picture(40, 120, seed=seed + 1), "PNG"),
    }


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height grey pixels: a decompression bomb if ever decoded."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: int(len(data) * keep)]


def bad_inputs() -> dict[str, tuple[bytes, int]]:
    """name -> (bytes, expected status)."""
    arr = picture()
    return {
        "empty.png": (b"", 422),
        "notes.txt": (b"this is a text file, not a picture\n" * 20, 415),
        "truncated.png": (truncated(encode(arr, "PNG")), 422),
        "truncated.jpg": (truncated(encode(arr, "JPEG"), 0.4), 422),
        "image.ppm": (encode(arr, "PPM"), 415),
        "icon.ico": (encode(arr, "ICO"), 415),
        "bomb.png": (png_declaring(50_000, 50_000), 413),
    }
