"""Hostile uploads, small on the wire and huge once decoded (the corpus an outside test of the service used),
for bench/memory.py and the tests: TIFFs hiding one enormous tile, all-zero 7000x7000 PNGs, a PNG with 5 MB
of EXIF."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **params)
    return buffer.getvalue()


def zeros_png(side: int, channels: int | None, dtype=np.uint8) -> bytes:
    """An all-zero side x side PNG: a few hundred kB for 7000, side^2 x channels x bytes once decoded."""
    shape = (side, side) if channels is None else (side, side, channels)
    return encode(Image.fromarray(np.zeros(shape, dtype)), "PNG")


def tiff_with_tile(width: int = 64, height: int = 64, tile: int = 16384) -> bytes:
    """A grey TIFF declaring width x height pixels but holding one deflate-compressed tile x tile tile: small
    on the wire (~260 kB for 16384), hundreds of megabytes once libtiff decodes the tile."""
    data = zlib.compress(b"\0" * (tile * tile), 9)
    entries = [(256, 3, width), (257, 3, height), (258, 3, 8), (259, 3, 8), (262, 3, 1), (277, 3, 1),
               (322, 4, tile), (323, 4, tile), (324, 4, None), (325, 4, len(data))]
    data_offset = 8 + 2 + len(entries) * 12 + 4
    out = b"II*\x00" + struct.pack("<IH", 8, len(entries))
    for tag, kind, value in entries:
        value = data_offset if value is None else value
        out += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
    return out + struct.pack("<I", 0) + data


def exif_png(exif_bytes: int = 5_000_000) -> bytes:
    """A 300x300 PNG carrying an EXIF block of `exif_bytes`."""
    return encode(Image.new("RGB", (300, 300)), "PNG", exif=b"MM\x00*\x00\x00\x00\x08" + bytes(exif_bytes))


def corpus() -> dict[str, bytes]:
    """name -> file: what the outside test sent, each of which cost it hundreds of MB to a gigabyte."""
    return {"tiff 16384^2 tile": tiff_with_tile(tile=16384), "tiff 26000^2 tile": tiff_with_tile(tile=26000),
            "png 7000^2 RGB": zeros_png(7000, 3), "png 7000^2 RGBA": zeros_png(7000, 4),
            "png 7000^2 16-bit grey": zeros_png(7000, None, np.uint16), "png with 5 MB EXIF": exif_png()}
