"""Find every face in a photo with a model's scan graph: an image pyramid, one ONNX Runtime run per level,
then non-maximum suppression with each kept box averaged (by score) with the boxes it suppressed.

A re-implementation of training/localiser.py's `Localiser.locate` (the two halves share no code;
tests/test_localiser.py checks that both find the same boxes). Parameters come from the manifest's
"localiser" entry; the request may change the threshold, the smallest face and the number of faces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from service.runtime import Runtime, sigmoid
from service.schemas import Localiser


@dataclass(frozen=True)
class Found:
    boxes: np.ndarray  # [M, 5]: x, y, width, height (int px of the photo), score; highest score first
    best: float  # the highest face probability of any window looked at


def pyramid(width: int, height: int, cfg: Localiser, min_face: int, max_pixels: int | None = None) -> list[float]:
    """Scale factors photo -> level: min_face px to one window first, then cfg.scale_step smaller each time,
    while the shorter side still holds a window. With max_pixels, no level holds more pixels than that: a huge
    photo is scanned for larger faces only, so its memory stays bounded (FACEDET_MAX_SCAN_PIXELS)."""
    scale, scales = cfg.window / min_face, []
    if max_pixels is not None:
        scale = min(scale, (max_pixels / (width * height)) ** 0.5)
    while min(width, height) * scale >= cfg.window:
        scales.append(scale)
        scale /= cfg.scale_step
    return scales


def level_input(image: Image.Image, scale: float, stride: int) -> np.ndarray:
    """The photo resized by `scale`, edge-padded to multiples of `stride`: float32 [1, 3, H, W] in [0, 1]."""
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    arr = np.asarray(image.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32) / np.float32(255.0)
    arr = np.pad(arr, ((0, -h % stride), (0, -w % stride), (0, 0)), mode="edge")
    return np.ascontiguousarray(arr.transpose(2, 0, 1)[None])


def windows(prob: np.ndarray, scale: float, cfg: Localiser, threshold: float) -> np.ndarray:
    """A level's probability map [h', w'] -> [K, 5] photo-px boxes of the windows at or above threshold."""
    i, j = np.nonzero(prob >= threshold)
    side = cfg.window / scale
    if not len(i):
        return np.zeros((0, 5))
    return np.stack([j * cfg.stride / scale, i * cfg.stride / scale, np.full(len(i), side), np.full(len(i), side),
                     prob[i, j]], axis=1)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0, y0 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y1 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    return inter / (box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter)


def merge(boxes: np.ndarray, nms_iou: float, max_faces: int) -> np.ndarray:
    """NMS, best first; a kept box is the score-weighted mean of its group and keeps its own score."""
    order = boxes[np.argsort(-boxes[:, 4], kind="stable")]
    kept = []
    while len(order) and len(kept) < max_faces:
        overlap = iou(order[0], order)
        group = order[overlap > nms_iou]
        w = group[:, 4:5] + 1e-12  # a score can underflow to 0
        kept.append(np.r_[(group[:, :4] * w).sum(0) / w.sum(), order[0, 4]])
        order = order[overlap <= nms_iou]
    return np.array(kept).reshape(-1, 5)


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    out = boxes.copy()
    x0, y0 = np.clip(np.rint(boxes[:, 0]), 0, width - 1), np.clip(np.rint(boxes[:, 1]), 0, height - 1)
    x1 = np.clip(np.rint(boxes[:, 0] + boxes[:, 2]), x0 + 1, width)
    y1 = np.clip(np.rint(boxes[:, 1] + boxes[:, 3]), y0 + 1, height)
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = x0, y0, x1 - x0, y1 - y0
    return out


def locate(runtime: Runtime, model: str, image: Image.Image, threshold: float, min_face: int,
           max_faces: int, max_pixels: int | None = None) -> Found:
    """Every face in an RGB photo (EXIF orientation applied), in its own pixels."""
    cfg = runtime.manifest.localiser
    w, h = image.size
    found, best = [], 0.0
    for scale in pyramid(w, h, cfg, min_face, max_pixels):
        prob = sigmoid(runtime.scan(model, level_input(image, scale, cfg.stride)))
        best = max(best, float(prob.max(initial=0.0)))
        found.append(windows(prob, scale, cfg, threshold))
    boxes = np.concatenate(found) if found else np.zeros((0, 5))
    return Found(clip_boxes(merge(boxes, cfg.nms_iou, max_faces), w, h), best)


def face_square(box: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """The square a face box is cut out as for the DB-VAE: its side the box's larger side, centred on the box,
    moved (not shrunk) to lie inside the photo where it fits. -> (left, top, right, bottom)."""
    x, y, bw, bh = box
    side = min(max(bw, bh), width, height)
    left = int(round(min(max(x + bw / 2 - side / 2, 0), width - side)))
    top = int(round(min(max(y + bh / 2 - side / 2, 0), height - side)))
    return left, top, left + side, top + side
