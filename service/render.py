"""Model output ([N, C, H, W] floats in [0, 1], C = 3 for RGB or 1 for grey) -> PNG, PNG strip, animated GIF or
base64 frames, in RGB or one-channel grey alike."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def to_pil(chw: np.ndarray) -> Image.Image:
    """[3, H, W] -> an RGB picture; [1, H, W] -> a grey ("L") one."""
    hwc = np.rint(np.clip(chw, 0.0, 1.0).transpose(1, 2, 0) * 255.0).astype(np.uint8)
    return Image.fromarray(hwc[:, :, 0], "L") if hwc.shape[2] == 1 else Image.fromarray(hwc, "RGB")


def png(chw: np.ndarray) -> bytes:
    buf = io.BytesIO()
    to_pil(chw).save(buf, format="PNG")
    return buf.getvalue()


def png_strip(frames: np.ndarray) -> bytes:
    """Frames side by side, left to right, in one PNG."""
    h, w = frames.shape[2], frames.shape[3]
    strip = Image.new("L" if frames.shape[1] == 1 else "RGB", (w * len(frames), h))
    for i, frame in enumerate(frames):
        strip.paste(to_pil(frame), (i * w, 0))
    buf = io.BytesIO()
    strip.save(buf, format="PNG")
    return buf.getvalue()


def gif(frames: np.ndarray, frame_ms: int = 120) -> bytes:
    """An endless animation that plays a -> b, then back: frames 0..n-1, then n-2..1 (2n - 2 in all)."""
    images = [to_pil(f) for f in frames]
    images = images + images[-2:0:-1]
    buf = io.BytesIO()
    # disposal=1 and no optimisation: every frame is kept whole, so a reader gets exactly len(frames) frames.
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0,
                   optimize=False, disposal=1)
    return buf.getvalue()


def base64_pngs(frames: np.ndarray) -> list[str]:
    return [base64.b64encode(png(f)).decode("ascii") for f in frames]
