"""Decode uploaded bytes into pixels and turn them into model input, exactly as training does.

The steps mirror training/data/image.py (the service may not import it; a test compares both on the
same files): decode (JPEG at a reduced DCT scale) -> EXIF orientation -> RGB -> centre square crop ->
bilinear resize -> /255, NCHW.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from service.problems import ProblemError

Image.init()  # register every plugin now: open(formats=...) only looks up those already registered

# Metadata a face service has no use for beyond EXIF orientation: an EXIF, ICC or XMP block over this is refused
# (413) before it is parsed; parsing a 5 MB EXIF blob in a PNG cost 41 MB. PNG text chunks are held to the same
# total by Pillow itself (its default allows 64 MB of them).
MAX_METADATA_BYTES = 1024 * 1024
METADATA_KEYS = ("exif", "icc_profile", "xmp", "XML:com.adobe.xmp")
PngImagePlugin.MAX_TEXT_MEMORY = MAX_METADATA_BYTES
PngImagePlugin.MAX_TEXT_CHUNK = min(PngImagePlugin.MAX_TEXT_CHUNK, MAX_METADATA_BYTES)

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # Pillow's names; JPEG covers MPO phone photos
ALLOWED_TEXT = "JPEG, PNG, WebP, GIF, BMP or TIFF"
Payload = tuple[str, bytes]  # (label used in error messages, encoded bytes)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB. 16/32-bit grey is scaled (not clipped); alpha is composited on white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(im).astype(np.int64)
        # 'I' holds 16-bit data (PNG) or promoted 8-bit data: only the former needs scaling.
        if arr.max(initial=0) > 255:
            arr = arr >> 8
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")
    elif im.mode == "F":
        im = Image.fromarray(np.clip(np.asarray(im), 0, 255).astype(np.uint8), mode="L")
    if im.mode in ("P", "PA") or (im.mode == "L" and "transparency" in im.info):
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "RGBa", "La"):
        im = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im)
    return im.convert("RGB")


def centre_square(im: Image.Image) -> Image.Image:
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return im.crop((left, top, left + s, top + s))


def prepare(im: Image.Image, size: int) -> np.ndarray:
    """Decoded image -> uint8 [size, size, 3] RGB."""
    ImageOps.exif_transpose(im, in_place=True)  # in place: the default returns a copy even when upright
    im = to_rgb(im)
    im = centre_square(im)
    im = im.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def open_image(data: bytes, *, max_pixels: int, label: str = "image") -> Image.Image:
    """Encoded bytes -> an opened image (header read, pixels not decoded yet), or a ProblemError."""
    if not data:
        raise ProblemError(422, "empty-image", "Empty image", f"{label}: the file is empty (0 bytes)")
    with image_problems(label):
        # Only the allowed decoders even look at the bytes; open() reads the header, not the pixels.
        im = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
        if im.width * im.height > max_pixels:
            raise _too_many_pixels(label, im.width, im.height, max_pixels)
        unit = tiff_decode_unit(im)
        if unit is not None and unit[0] * unit[1] > max_pixels:
            # libtiff decodes a whole tile (or strip) at a time, however small the image it declares: a 64x64
            # TIFF holding one 16384x16384 tile is a decompression bomb of 268 M pixels per band.
            raise ProblemError(413, "image-too-large", "Image too large",
                               f"{label}: a TIFF {unit[0]}x{unit[1]} tile or strip exceeds the {max_pixels}-pixel "
                               "limit (FACEDET_MAX_IMAGE_PIXELS)")
        check_metadata(im, label)
        return im


def check_metadata(im: Image.Image, label: str) -> None:
    """413 for an EXIF, ICC or XMP block over MAX_METADATA_BYTES. Run on opening and again after decoding, which
    may have read a PNG's late eXIf chunk, before anything parses it (EXIF orientation)."""
    for key in METADATA_KEYS:
        value = im.info.get(key)
        if isinstance(value, (bytes, str)) and len(value) > MAX_METADATA_BYTES:
            raise ProblemError(413, "metadata-too-large", "Image metadata too large",
                               f"{label}: its {key} block holds {len(value)} bytes; at most {MAX_METADATA_BYTES} "
                               "are accepted")


def tiff_decode_unit(im: Image.Image) -> tuple[int, int] | None:
    """(width, height) of the block a TIFF is decoded by: its tile, or a strip of RowsPerStrip rows; None for
    other formats."""
    if im.format != "TIFF":
        return None
    tags = im.tag_v2
    if 322 in tags and 323 in tags:  # TileWidth, TileLength
        return int(tags[322]), int(tags[323])
    return im.width, min(int(tags.get(278, im.height)), 2 ** 32)  # RowsPerStrip (default: the whole image)


def load(im: Image.Image, *, size: int, label: str = "image") -> np.ndarray:
    """An opened image -> uint8 [size, size, 3]: the pixels are decoded here."""
    with image_problems(label), im:
        im.draft(None, (2 * size, 2 * size))  # JPEG only: see training/data/image.py, load_image
        im.load()
        check_metadata(im, label)
        return prepare(im, size)


def load_photo(im: Image.Image, *, smallest: float = 1.0, label: str = "image") -> tuple[Image.Image, float]:
    """An opened image -> (the whole picture as 8-bit RGB, EXIF orientation applied; how many of the upload's
    pixels one of its pixels spans). A JPEG decodes at a reduced DCT scale when `smallest` (the largest fraction
    of the full size the caller will look at) allows it; other formats decode whole."""
    with image_problems(label), im:
        full = im.size
        if smallest < 1.0:
            im.draft("RGB", (max(1, int(full[0] * smallest)), max(1, int(full[1] * smallest))))
        im.load()
        check_metadata(im, label)
        factor = full[0] / im.size[0]
        ImageOps.exif_transpose(im, in_place=True)
        return to_rgb(im), factor


def centre_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The centre square that the canonical pre-processing crops, as (x, y, width, height)."""
    s = min(width, height)
    return (width - s) // 2, (height - s) // 2, s, s


def oriented_size(im: Image.Image, label: str = "image") -> tuple[int, int]:
    """An opened image's size as it will stand after EXIF orientation (5-8 swap the sides).

    Only an image whose header carried EXIF or XMP data (or a TIFF, whose tags are its header) can be turned:
    for the others getexif() is skipped, since on a PNG it decodes the whole image to look for a late eXIf
    chunk (~60 us for 64x64, a tenth of a small /detect request). Such a late chunk is missed here: the box of
    that rare crop would then be the centre square of the unturned image."""
    if not ({"exif", "xmp", "XML:com.adobe.xmp"} & im.info.keys()) and im.format != "TIFF":
        return im.size
    with image_problems(label):  # reading the EXIF block can meet a truncated file
        orientation = im.getexif().get(0x0112, 1)
    return (im.height, im.width) if orientation in (5, 6, 7, 8) else im.size


def decode(data: bytes, *, size: int, max_pixels: int, label: str = "image") -> np.ndarray:
    """Encoded bytes -> uint8 [size, size, 3], or a ProblemError naming what is wrong with them."""
    return load(open_image(data, max_pixels=max_pixels, label=label), size=size, label=label)


@contextmanager
def image_problems(label: str) -> Iterator[None]:
    """Pillow's exceptions while opening or decoding -> the ProblemError the client sees."""
    try:
        yield
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refuses (or, with the warning filter set at start-up, refuses earlier) before decoding.
        raise ProblemError(413, "image-too-large", "Image too large",
                           f"{label}: refused before decoding: {exc}") from None
    except UnidentifiedImageError:
        raise ProblemError(415, "unsupported-image", "Unsupported image",
                           f"{label}: not a {ALLOWED_TEXT} image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ProblemError(422, "corrupt-image", "Corrupt image",
                           f"{label}: truncated or corrupt image data ({exc})") from None


def _too_many_pixels(label: str, w: int, h: int, cap: int) -> ProblemError:
    return ProblemError(413, "image-too-large", "Image too large",
                        f"{label}: {w}x{h} = {w * h} pixels exceeds the {cap}-pixel limit (FACEDET_MAX_IMAGE_PIXELS)")


def to_model_input(images: list[np.ndarray] | np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] RGB -> float32 [N, 3, H, W] in [0, 1]."""
    batch = np.stack(images) if isinstance(images, list) else images
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


# --- a request's payloads -> one model-input batch ---


def decode_batch(payloads: list[Payload], size: int, max_pixels: int) -> np.ndarray:
    """Decode every payload (the first bad one raises its ProblemError) -> float32 [N, 3, size, size]."""
    return to_model_input([decode(data, size=size, max_pixels=max_pixels, label=label) for label, data in payloads])


def may_be_small(payloads: list[Payload], limit: int) -> bool:
    """Whether the request's files could hold at most `limit` pixels together, from their sizes alone: no more
    bytes than an uncompressed RGBA image of that many pixels."""
    return limit > 0 and sum(len(data) for _, data in payloads) <= 4 * limit


def open_small(payloads: list[Payload], limit: int, max_pixels: int) -> list[tuple[str, Image.Image]] | None:
    """The request's images opened (headers only) if they hold at most `limit` pixels together, else None.

    Files larger than an uncompressed RGBA image of `limit` pixels are not even opened (they cannot be
    that small without unusual metadata, and then they simply take the pool). A bad file raises its
    ProblemError here, as it would in the pool.
    """
    if not may_be_small(payloads, limit):
        return None
    images = [(label, open_image(data, max_pixels=max_pixels, label=label)) for label, data in payloads]
    if sum(im.width * im.height for _, im in images) > limit:
        return None
    return images


def load_batch(images: list[tuple[str, Image.Image]], size: int) -> np.ndarray:
    """Opened images -> float32 [N, 3, size, size]."""
    return to_model_input([load(im, size=size, label=label) for label, im in images])
