"""Find every face in a photo with a model's scan graph: an image pyramid, one ONNX Runtime run per level (through
the model's fast scan where the manifest has one, service/fast_scan.py: on the photo's luma if it takes luma; its
stage 1 the level scan where there is one, at half the level's size, training/level_scan.py),
then non-maximum suppression with each kept box averaged (by score) with the boxes it suppressed. Those merged
boxes are candidates: each is refined and verified by cutting its square out at a small grid of shifts and
sizes and scoring the 64x64 crops with the same graphs (on one window they are the crop classifier; cut from the
luma where the fast scan takes luma); the best crop is the face, its probability the face's score, and overlaps
among those are suppressed. Where the model has a box head (training/box_regression.py), each face is then moved
part of the way to where the head says the face is in its crop, verified again at the moved crop, scored by the
geometric mean of both crops' probabilities, and overlaps suppressed once more. Last, a face mostly inside a
better-scoring one is dropped (the manifest's nested_overlap).

A re-implementation of training/localiser.py's `Localiser.locate` (the two halves share no code;
tests/test_localiser_refine.py checks that both find the same boxes). Parameters come from the manifest's
"localiser" entry; the request may change the threshold, the smallest face and the number of faces.

Unlike training's copy, a large level is scanned in horizontal bands, each with BAND_CONTEXT rows of the level
above and below it: the scores are the whole level's (the context covers what the convolutions reach past a
window), but ONNX Runtime's activations, and the float32 copy of the level, are only ever one band's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from service.runtime import Runtime, sigmoid
from service.schemas import Localiser

# Pixels of one band of a pyramid level, context included: its float32 copy and ONNX Runtime's activations take
# ~100 bytes a pixel (service/budget.py), so ~100 MB, where a 1920x1280 photo's whole first level (6.3 M pixels)
# took 535 MB in one run. Smaller bands repeat more context rows: 1 M pixels cost ~10% in speed on that photo.
SCAN_BAND_PIXELS = 1024 * 1024
# Rows of the level a band reads above and below the windows it scores. A window's score depends on the pixels its
# convolutions reach: 85 px for the 64 px window (kernels 5, 5, 3, 3 at strides 2, 4, 8, 16, then the 4x4 head),
# so 11 px past each edge; 32 (two strides, so the band stays on the stride grid) leaves a margin.
BAND_CONTEXT = 32
# Refining crops scored per ONNX Runtime run: 64 windows of 64x64 hold ~26 MB of activations (~100 bytes a pixel),
# a quarter of one scan band, whatever the number of candidates.
REFINE_BATCH = 64


@dataclass(frozen=True)
class Found:
    boxes: np.ndarray  # [M, 5]: x, y, width, height (int px of the photo), score; highest score first
    best: float  # the highest score of a face found; with none, of a refined candidate; with none, of any window


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


def level_pixels(image: Image.Image, scale: float, stride: int) -> np.ndarray:
    """The photo (RGB, or its luma for a fast scan that takes luma) resized by `scale`, edge-padded to multiples
    of `stride`: uint8 [H, W, C]."""
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    arr = np.atleast_3d(np.asarray(image.resize((w, h), Image.Resampling.BILINEAR)))
    return np.pad(arr, ((0, -h % stride), (0, -w % stride), (0, 0)), mode="edge")


@dataclass(frozen=True)
class Geometry:
    """A scan's stride, window and band context in the pixels of the levels it reads: a level scan reads levels
    at its input scale (0.5: half the size), so all three are that much smaller there."""

    stride: int
    window: int
    context: int


def geometry(cfg: Localiser, input_scale: float = 1.0) -> Geometry:
    return Geometry(round(cfg.stride * input_scale), round(cfg.window * input_scale),
                    round(BAND_CONTEXT * input_scale))


def scan_level(runtime: Runtime, model: str, level: np.ndarray, geom: Geometry,
               band_pixels: int = SCAN_BAND_PIXELS) -> np.ndarray:
    """A level uint8 [H, W, C] -> its face logit map [H/stride - k + 1, W/stride - k + 1] (k = window / stride),
    exact from the scan threshold on, scanned in bands of about `band_pixels` pixels, context included."""
    height, width = level.shape[:2]
    rows = height // geom.stride - geom.window // geom.stride + 1
    per_band = band_rows(width, geom, band_pixels)
    maps = []
    for first in range(0, rows, per_band):
        last = min(rows, first + per_band)  # output rows [first, last)
        top = max(0, first * geom.stride - geom.context)
        bottom = min(height, (last - 1) * geom.stride + geom.window + geom.context)
        band = to_floats(level[top:bottom])  # [1, C, h, W]
        skip = (first * geom.stride - top) // geom.stride
        maps.append(runtime.scan_band(model, band)[skip:skip + last - first])
    return np.concatenate(maps)


def to_floats(pixels: np.ndarray) -> np.ndarray:
    """uint8 [h, w, C] -> float32 [1, C, h, w] in [0, 1]. Luma in one pass (a third less time than a copy and then a
    divide in place); RGB must be transposed into a copy first, where one pass would be many times slower."""
    if pixels.shape[2] == 1:
        return np.divide(pixels[:, :, 0][None, None], np.float32(255.0), dtype=np.float32)
    x = np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], dtype=np.float32)
    x /= np.float32(255.0)
    return x


def band_rows(width: int, geom: Geometry, band_pixels: int = SCAN_BAND_PIXELS) -> int:
    """Output rows per band of a level `width` px wide: what fits in band_pixels with the window's own rows and
    the context on both sides; at least one (a level wider than band_pixels / (window + 2 context) goes over)."""
    return max(1, (band_pixels // width - geom.window - 2 * geom.context) // geom.stride + 1)


def band_size(width: int, height: int, geom: Geometry, band_pixels: int = SCAN_BAND_PIXELS) -> int:
    """Pixels of the largest band scan_level runs for a (padded) level of width x height."""
    rows = (band_rows(width, geom, band_pixels) - 1) * geom.stride + geom.window + 2 * geom.context
    return width * min(height, rows)


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


def merge(boxes: np.ndarray, nms_iou: float, max_faces: int, min_neighbours: int = 1) -> np.ndarray:
    """NMS, best first; a kept box is the score-weighted mean of its group and keeps its own score; a group of
    fewer than `min_neighbours` boxes is dropped."""
    order = boxes[np.argsort(-boxes[:, 4], kind="stable")]
    kept = []
    while len(order) and len(kept) < max_faces:
        overlap = iou(order[0], order)
        group = order[overlap > nms_iou]
        w = group[:, 4:5] + 1e-12  # a score can underflow to 0
        if len(group) >= min_neighbours:
            kept.append(np.r_[(group[:, :4] * w).sum(0) / w.sum(), order[0, 4]])
        order = order[overlap <= nms_iou]
    return np.array(kept).reshape(-1, 5)


def suppress(boxes: np.ndarray, nms_iou: float) -> np.ndarray:
    """Plain NMS, best first: a box overlapping a kept one by more than nms_iou is dropped; kept boxes stay."""
    order = boxes[np.argsort(-boxes[:, 4], kind="stable")]
    kept = []
    while len(order):
        kept.append(order[0])
        order = order[1:][iou(order[0], order[1:]) <= nms_iou]
    return np.array(kept).reshape(-1, 5)


def drop_nested(boxes: np.ndarray, overlap: float) -> np.ndarray:
    """Best first, a box goes when a kept (better) box covers more than `overlap` of the smaller of the two."""
    order = boxes[np.argsort(-boxes[:, 4], kind="stable")]
    kept: list[np.ndarray] = []
    for box in order:
        if not kept or (covered(box, np.array(kept)) <= overlap).all():
            kept.append(box)
    return np.array(kept).reshape(-1, 5)


def covered(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection of one box with each of boxes [K, >=4] over the smaller one's area."""
    x0, y0 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y1 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    return inter / np.minimum(box[2] * box[3], boxes[:, 2] * boxes[:, 3])


def refine_squares(boxes: np.ndarray, cfg: Localiser, width: int, height: int) -> np.ndarray:
    """Candidates [K, >=4] -> their refining squares [K, G, 3] (left, top, side), the unmoved one first: each
    candidate's square (its larger side, same centre) moved by every shift along x and y and resized by every
    scale, then moved (not shrunk) to lie inside the photo."""
    grid = np.array([(dx, dy, ds) for ds in cfg.refine_scales for dy in cfg.refine_shifts
                     for dx in cfg.refine_shifts], dtype=np.float64)  # [G, 3]
    side0 = np.maximum(boxes[:, 2], boxes[:, 3])[:, None]  # [K, 1]
    cx = boxes[:, 0:1] + boxes[:, 2:3] / 2 + grid[:, 0] * side0  # [K, G]
    cy = boxes[:, 1:2] + boxes[:, 3:4] / 2 + grid[:, 1] * side0
    side = np.minimum(side0 * grid[:, 2], min(width, height))
    left = np.clip(cx - side / 2, 0, width - side)
    top = np.clip(cy - side / 2, 0, height - side)
    return np.stack([left, top, side], axis=-1)


def refine(runtime: Runtime, model: str, image: Image.Image, boxes: np.ndarray, cfg: Localiser) -> np.ndarray:
    """Candidates [K, 5] -> [K, 5]: each the best of its refining squares, cut from `image` (the photo, or its
    luma where the model's fast scan takes luma) as 64x64 crops and scored as whole windows (REFINE_BATCH a run,
    Runtime.window_crop_logits), with that crop's probability; a tie keeps the unmoved square."""
    if not len(boxes):
        return np.zeros((0, 5))
    squares = refine_squares(boxes, cfg, image.width, image.height)  # [K, G, 3]
    flat, probs = squares.reshape(-1, 3), []
    for start in range(0, len(flat), REFINE_BATCH):
        batch = crops_of(image, flat[start:start + REFINE_BATCH], cfg.window)
        probs.append(sigmoid(runtime.window_crop_logits(model, batch)))
    probs = np.concatenate(probs).reshape(squares.shape[:2])  # [K, G]
    pick = probs.argmax(axis=1)
    best = squares[np.arange(len(boxes)), pick]  # [K, 3]
    return np.c_[best[:, 0], best[:, 1], best[:, 2], best[:, 2], probs[np.arange(len(boxes)), pick]]


def moved_squares(squares: np.ndarray, offsets: np.ndarray, step: float, width: int, height: int) -> np.ndarray:
    """Squares [K, 3] (left, top, side) moved `step` of the way the box head's offsets [K, 3] (dx, dy in sides,
    log of the face's side over the square's) say the face is, then moved (not shrunk) inside the photo."""
    side0 = squares[:, 2]
    cx = squares[:, 0] + side0 / 2 + step * offsets[:, 0] * side0
    cy = squares[:, 1] + side0 / 2 + step * offsets[:, 1] * side0
    side = np.minimum(side0 * np.exp(step * offsets[:, 2]), min(width, height))
    return np.stack([np.clip(cx - side / 2, 0, width - side), np.clip(cy - side / 2, 0, height - side), side], 1)


def crops_of(image: Image.Image, squares: np.ndarray, size: int) -> np.ndarray:
    """Squares [n, 3] (left, top, side) of `image`, each resized to size x size -> float32 [n, C, size, size]."""
    crops = [np.atleast_3d(np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=(l, t, l + s, t + s))))
             for l, t, s in squares]
    return np.ascontiguousarray(np.stack(crops).transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


def regress(runtime: Runtime, model: str, image: Image.Image, boxes: np.ndarray, cfg: Localiser) -> np.ndarray:
    """Refined faces [K, 5] (squares) -> [K, 5]: each moved by the model's box head (moved_squares, box_step of
    the way) and verified again there, REFINE_BATCH a run; its score the geometric mean of both crops'
    probabilities, so a face must look like one where the head puts it too."""
    out = []
    for start in range(0, len(boxes), REFINE_BATCH):
        part = boxes[start:start + REFINE_BATCH]
        offsets = runtime.box_offsets(model, crops_of(image, part[:, :3], cfg.window))
        moved = moved_squares(part[:, :3], offsets, cfg.box_step, image.width, image.height)
        probs = sigmoid(runtime.window_crop_logits(model, crops_of(image, moved, cfg.window)))
        out.append(np.c_[moved, moved[:, 2], np.sqrt(part[:, 4] * probs)])
    return np.concatenate(out) if out else np.zeros((0, 5))


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    out = boxes.copy()
    x0, y0 = np.clip(np.rint(boxes[:, 0]), 0, width - 1), np.clip(np.rint(boxes[:, 1]), 0, height - 1)
    x1 = np.clip(np.rint(boxes[:, 0] + boxes[:, 2]), x0 + 1, width)
    y1 = np.clip(np.rint(boxes[:, 1] + boxes[:, 3]), y0 + 1, height)
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = x0, y0, x1 - x0, y1 - y0
    return out


def locate(runtime: Runtime, model: str, image: Image.Image, threshold: float, min_face: int,
           max_faces: int, max_pixels: int | None = None, min_neighbours: int | None = None) -> Found:
    """Every face in an RGB photo (EXIF orientation applied), in its own pixels; min_neighbours: the
    manifest's unless given. Candidates are the windows from the manifest's scan_threshold on, whatever the
    threshold asked: the faces at a higher threshold are exactly a subset of those at a lower one."""
    cfg = runtime.manifest.localiser
    w, h = image.size
    found, best = [], 0.0
    fast = runtime.manifest.models[model].fast_scan
    scanned = image.convert("L") if fast is not None and fast.input == "luma" else image
    s = runtime.level_input_scale(model)  # a level scan reads each level at this share of its size
    geom = geometry(cfg, s)
    for scale in pyramid(w, h, cfg, min_face, max_pixels):
        prob = sigmoid(scan_level(runtime, model, level_pixels(scanned, scale * s, geom.stride), geom))
        best = max(best, float(prob.max(initial=0.0)))
        found.append(windows(prob, scale, cfg, cfg.scan_threshold))
    boxes = np.concatenate(found) if found else np.zeros((0, 5))
    neighbours = cfg.min_neighbours if min_neighbours is None else min_neighbours
    candidates = merge(boxes, cfg.nms_iou, max(max_faces, cfg.max_faces), neighbours)
    refined = suppress(refine(runtime, model, scanned, candidates, cfg), cfg.nms_iou)
    if runtime.has_box_head(model):
        refined = suppress(regress(runtime, model, scanned, refined, cfg), cfg.nms_iou)
    refined = drop_nested(refined, cfg.nested_overlap)
    faces = clip_boxes(refined[refined[:, 4] >= threshold][:max_faces], w, h)
    # With no candidate, the best window scanned; else the best refined crop, which may be below the threshold.
    return Found(faces, float(refined[0, 4]) if len(refined) else best)


def face_square(box: tuple[int, int, int, int], width: int, height: int) -> tuple[int, int, int, int]:
    """The square a face box is cut out as for the DB-VAE: its side the box's larger side, centred on the box,
    moved (not shrunk) to lie inside the photo where it fits. -> (left, top, right, bottom)."""
    x, y, bw, bh = box
    side = min(max(bw, bh), width, height)
    left = int(round(min(max(x + bw / 2 - side / 2, 0), width - side)))
    top = int(round(min(max(y + bh / 2 - side / 2, 0), height - side)))
    return left, top, left + side, top + side
