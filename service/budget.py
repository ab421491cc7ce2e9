"""How much memory an image will take while the service decodes and scans it, worked out from its header before
any pixel is decoded, so that a small file declaring a huge image is refused (413) or held back (503) up front.

Only the first frame of any file is decoded (GIF and WebP animations, multi-page TIFFs): that is what is counted.
The per-pixel figures are peaks measured on the service's own path (load_photo: decode -> EXIF orientation ->
to_rgb), tests/test_service_budget.py keeps them honest. PNG, GIF, BMP, WebP and TIFF cannot decode at a
reduced size (Image.reduce only shrinks what is already decoded), so they count in full; JPEG counts at the DCT
scale its draft will pick.
"""

from __future__ import annotations

from PIL import Image

MB = 1024 * 1024

# Peak bytes per decoded pixel, the decoded image included: Pillow keeps every multi-band mode in 4 bytes a pixel,
# RGB becomes a copy, alpha is composited over a white canvas (three RGBA images at once), 16/32-bit grey goes
# through numpy arrays before it is 8-bit (16-bit grey: 137.5 MB for a 2500x2500 PNG in a fresh interpreter,
# 22.0 bytes a pixel; tests/test_service_budget.py measures it again).
PEAK_BYTES_PER_PIXEL = {"1": 5, "L": 5, "P": 13, "RGB": 8, "YCbCr": 8, "CMYK": 8, "LAB": 8, "HSV": 8, "RGBX": 8,
                        "LA": 16, "La": 16, "PA": 16, "RGBA": 16, "RGBa": 16, "I;16": 22, "I;16B": 22,
                        "I;16L": 22, "I;16N": 22, "I": 21, "F": 12}
UNKNOWN_MODE_BYTES = 22  # the largest above: a mode Pillow adds later is not under-counted
# A TIFF is decoded one tile or strip at a time into a buffer of its own, up to 4 samples of 16 bits a pixel.
TIFF_UNIT_BYTES_PER_PIXEL = 8
# A pyramid level is held as 8-bit RGB, 3 bytes a pixel, and scanned in bands (service/localiser.py): a band's
# float32 copy plus the scan graph's activations in ONNX Runtime's arena. Measured on a 1920x1280 photo (level 0:
# 6.3 M pixels) in a fresh process: peak resident memory +128 MB in 1 M-pixel bands and +207 MB in 2 M-pixel ones,
# 86-100 bytes a band pixel once the photo and the level are taken off; the whole level in one run took +535 MB.
LEVEL_BYTES_PER_PIXEL = 3
SCAN_BYTES_PER_BAND_PIXEL = 100


def draft_size(im: Image.Image, requested: tuple[int, int] | None) -> tuple[int, int]:
    """The size a JPEG decodes at after draft(mode, requested): the largest DCT scale 1/8..1 that keeps both sides
    at least the requested ones (Pillow's JpegImageFile.draft). Other formats, or no request: the full size."""
    w, h = im.size
    if im.format not in ("JPEG", "MPO") or requested is None:
        return w, h
    scale = min(w // max(1, requested[0]), h // max(1, requested[1]))
    f = next((f for f in (8, 4, 2) if scale >= f), 1)
    return (w + f - 1) // f, (h + f - 1) // f


def decoded_bytes(im: Image.Image, requested: tuple[int, int] | None = None,
                  tiff_unit: tuple[int, int] | None = None) -> int:
    """Peak bytes of decoding an opened (not yet loaded) image's first frame and making it 8-bit RGB, its EXIF
    orientation applied; `requested` is the size a JPEG is drafted to, `tiff_unit` a TIFF's tile or strip."""
    w, h = draft_size(im, requested)
    total = w * h * PEAK_BYTES_PER_PIXEL.get(im.mode, UNKNOWN_MODE_BYTES)
    if tiff_unit is not None:
        total += tiff_unit[0] * tiff_unit[1] * TIFF_UNIT_BYTES_PER_PIXEL
    return total


def scan_bytes(level_pixels: int, band_pixels: int) -> int:
    """Peak bytes of scanning the pyramid whose largest level holds `level_pixels`, scanned in bands of at most
    `band_pixels` (the other levels are smaller, and freed before the next)."""
    return level_pixels * LEVEL_BYTES_PER_PIXEL + min(level_pixels, band_pixels) * SCAN_BYTES_PER_BAND_PIXEL
