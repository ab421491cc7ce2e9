"""The localiser: find every face in a photo with our own trained networks (OverFeat-style scanning).

A trained classifier (the CNN, or the DB-VAE's encoder with its face logit) looks at one 64x64 window. Its
conv blocks halve the size four times (64 -> 4), and its dense head reads the last 4x4x72 map. Rewritten as
convolutions - the first dense layer as a 4x4 conv, the face-logit row of the second as a 1x1 conv - the same
weights score every 64x64 window of a larger image at a stride of 16 px in one run: a logit map
[N, H/16 - 3, W/16 - 3]. An image pyramid (each level 2^(1/4) smaller) brings every face size to 64 px, then
overlapping hits are merged by non-maximum suppression, each kept box averaged with the boxes it suppressed
(weighted by score), as Viola-Jones and MTCNN merge theirs.

The merged boxes are candidates, not answers: a second stage refines and verifies each one (as MTCNN's later
stages and the box regression of Faster R-CNN do, here by search instead of a trained regressor). It cuts the
candidate's square out of the photo at a small grid of shifts and sizes, resizes each to 64x64 and scores them
with the same graph on whole windows, where it is exactly the crop classifier (with the fast scan: its two
stages on crops of the luma, see `Localiser`): the candidate becomes the best of those crops and its score that
crop's probability. On the 16 px stride and 2^(1/4) pyramid the scan's box is off by up to half a step, and the
scan's score of a window also sees its neighbours through the convs' padding; the crop's score sees only the face.

The classifier accepts a face from about 0.6x to 1.3x its framed size, so the best crop is often a window much
larger than the face. Where the model has a box head (training/box_regression.py, a linear regressor on the
window's conv features), a third stage moves each face's square part of the way to where the head says the face
is, verifies the moved crop too, and scores the face by the geometric mean of both crops' probabilities (`regress`).
Last, a face mostly inside a better-scoring one is dropped (`drop_nested`, MTCNN's "Min" NMS): a part of a large
face framed as a small face overlaps it by IoU no more than their area ratio, so plain NMS keeps it.

Where the model has a level scan (training/level_scan.py: the fast scan's stage 1 at half resolution and in int8),
the pyramid's levels are scanned by it, at half the size; everything after the scan stays float32.

At one 64x64 window the scan graph is exactly the classifier (export checks it to 1e-4); inside a larger image
a window also sees its neighbours through the convs' padding, so its score is close to, not equal to, the
crop's. The service re-implements `locate` in service/localiser.py (tests/test_localiser_refine.py compares
both).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image
from torch import nn

from training.contract import BOX_HEAD_GRAPH, GRAPH_IO, IMAGE_SIZE, LEVEL_SCAN_GRAPH
from training.fast_scan import survivors, window_features
from training.metrics import sigmoid
from training.model import DBVAE, FaceCNN

STRIDE = 16  # 2^4: four stride-2 conv blocks


@dataclass(frozen=True)
class LocaliserConfig:
    """How a photo is scanned; written to the manifest ("localiser") and read by the service."""

    window: int = IMAGE_SIZE  # px: the networks' input
    stride: int = STRIDE  # px between windows at one pyramid level
    scale_step: float = 2 ** 0.25  # each pyramid level this much smaller
    min_face_size: int = 40  # px in the photo: the first level is scaled by window / min_face_size
    nms_iou: float = 0.3  # boxes overlapping a better one by more than this are merged into it
    # A scanned window is a candidate from this probability on; a candidate is a face when its score reaches
    # `threshold`: its refined crop's probability (the classifier on that 64x64 crop alone), or with a box head
    # the geometric mean of that and its moved crop's (`regress`). Both were chosen on bench/photos, the set
    # the figures are reported on, so those figures flatter them. Precision / recall there, the scan alone at
    # 0.9 -> refined at 0.995: DB-VAE 0.54 / 0.87 -> 0.91 / 0.88, CNN 0.69 / 0.90 -> 0.87 / 0.90; -> moved by
    # the box head at 0.985: both 0.914 / 0.904 (0.985 is the threshold with the most recall at which both
    # models keep precision >= 0.9 there; at 0.98 DB-VAE 0.885 / 0.904, at 0.99 0.953 / 0.862). The request's
    # threshold is the last one; the first is fixed, so a higher threshold's faces are exactly a subset of a
    # lower one's.
    scan_threshold: float = 0.7
    threshold: float = 0.985
    max_faces: int = 100
    # A candidate needs at least this many windows above scan_threshold merged into its box (OpenCV's
    # minNeighbors, Viola-Jones's merging): a real face scores at neighbouring positions and scales, a texture
    # that fools one window often does not. Measured on bench/photos before the refining stage (so flattering
    # it), DB-VAE at 1 / 2 / 3: precision 0.33 / 0.53 / 0.67, recall 0.93 / 0.89 / 0.82, AP 0.87 / 0.86 / 0.81.
    min_neighbours: int = 2
    # The refining grid: a candidate's square moved by these fractions of its side along x and along y, and
    # resized by these factors, every combination (3 x 3 x 3 = 27 crops). A finer 5 x 5 x 5 grid found 1 more
    # face of 94 on bench/photos at 4.6x the crops.
    refine_shifts: tuple[float, ...] = (0.0, -0.1, 0.1)
    refine_scales: tuple[float, ...] = (1.0, 0.9, 1.1)
    crop_max_side: int = 2 * IMAGE_SIZE  # an image no larger than this is a crop: one box, the centre square
    # The fast scan (training/fast_scan.py): the dense layer at this rank (or the smallest double of it whose
    # error on real pictures is at most half the margin, fast_scan.choose_rank) over the whole level, then exactly
    # at the windows whose approximate logit is within this margin of scan_threshold's logit. Picked on 18.6 k
    # windows of bench/photos with the committed DB-VAE: rank 64 was off by at most 0.93 in logit (rank 32: 2.1),
    # and a margin of 2.0 left about 4 % of positions to the exact stage.
    fast_scan_rank: int = 64
    fast_scan_margin: float = 2.0
    # Box regression (training/box_regression.py): a refined box moves this share of the way the box head says
    # the face is (its centre and its log size). Chosen on bench/photos in a first trial (a head fitted alike on
    # all 100 LFW faces; threshold 0.98, DB-VAE precision / recall): 0.5 -> 0.91 / 0.90, 0.75 -> 0.91 / 0.87,
    # 1.0 -> 0.91 / 0.84: the head is fitted on 25 px LFW faces and overshoots on photos. 0: the box stays, and
    # is still verified at its (same) crop.
    box_step: float = 0.5
    # A face mostly inside a better-scoring face is dropped after the last suppression: more than this share of
    # the smaller box covered by the other (MTCNN's "Min" NMS). Most false alarms left were a part of a larger
    # face (an eye and a cheek, a chin) framed as a small face: IoU cannot drop them, as a small box inside a large
    # one overlaps it by their area ratio. On bench/photos (DB-VAE / CNN, precision / recall): off 0.892 / 0.883,
    # 0.934 / 0.904; 0.4 to 0.6 all 0.902 / 0.883, 0.944 / 0.894; 0.65 as off for the DB-VAE. Two true faces
    # there overlap by at most 0.40 of the smaller, so 0.6 leaves that much margin. 1: off.
    nested_overlap: float = 0.6

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# The scan network


class ScanNet(nn.Module):
    """A trained FaceCNN or DBVAE as a fully convolutional face-logit map: image [N, 3, H, W] (H, W multiples
    of 16, at least 64) -> logit [N, H/16 - 3, W/16 - 3]; entry (i, j) scores the window at (16 j, 16 i)."""

    def __init__(self, model: FaceCNN | DBVAE):
        super().__init__()
        net = model.net if isinstance(model, FaceCNN) else model.encoder
        layers = list(copy.deepcopy(net).eval())
        flatten = next(i for i, m in enumerate(layers) if isinstance(m, nn.Flatten))
        dense, head = [m for m in layers[flatten:] if isinstance(m, nn.Linear)]
        channels, side = model.cfg.filters[-1], model.cfg.feature_size  # 72, 4
        self.features = nn.Sequential(*layers[:flatten])  # front end + conv blocks: [N, 72, H/16, W/16]
        self.dense = nn.Conv2d(channels, dense.out_features, side)  # the 1152 -> 512 layer, as a 4x4 conv
        self.head = nn.Conv2d(dense.out_features, 1, 1)  # row 0 of the last layer: the face logit
        with torch.no_grad():
            # Flatten orders [C, 4, 4] as c * 16 + y * 4 + x, which is exactly a [out, C, 4, 4] conv kernel.
            self.dense.weight.copy_(dense.weight.view(dense.out_features, channels, side, side))
            self.dense.bias.copy_(dense.bias)
            self.head.weight.copy_(head.weight[:1].view(1, -1, 1, 1))
            self.head.bias.copy_(head.bias[:1])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.dense(self.features(image)))  # [N, 512, H/16 - 3, W/16 - 3]
        return self.head(h).squeeze(1)  # [N, H/16 - 3, W/16 - 3]


def export_scanner(model: FaceCNN | DBVAE, path: Path, seed: int = 0) -> float:
    """Export the scan graph with dynamic batch, height and width; -> the worst parity error: against the
    trained model on single 64x64 windows, and against ScanNet in PyTorch on larger images."""
    from training.export import PARITY_ATOL, ParityError, export_graph, for_export

    def window_logit(x: torch.Tensor) -> torch.Tensor:  # the trained classifier on 64x64 windows -> [N, 1, 1]
        out = model(x) if isinstance(model, FaceCNN) else model.encode(x)[0]
        return out.view(-1, 1, 1)

    name_in, names_out = GRAPH_IO["scanner"]
    model = model.eval()
    worst = export_graph(ScanNet(for_export(model)), torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE), path, name_in,
                         list(names_out), (1, 3), seed, reference=window_logit, spatial_multiple=STRIDE)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(seed)
    for shape in ((1, 3, 64, 112), (2, 3, 160, 96)):  # whole logit maps, against the unfolded ScanNet
        x = torch.rand(shape, generator=g)
        with torch.no_grad():
            expected = ScanNet(model).eval()(x).numpy()
        got = session.run(list(names_out), {name_in: x.numpy()})[0]
        if got.shape != expected.shape:
            raise ParityError(f"{path}: logit map {got.shape}, PyTorch gives {expected.shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
    if worst > PARITY_ATOL:
        raise ParityError(f"{path}: scan graph differs from PyTorch by {worst:.2e} (> {PARITY_ATOL:.0e})")
    return worst


# ---------------------------------------------------------------------------------------------
# Locating faces with an exported scan graph (ONNX Runtime): pyramid, scan, merge


def pyramid(width: int, height: int, cfg: LocaliserConfig, min_face: int | None = None) -> list[float]:
    """Scale factors photo -> level: the first brings `min_face` px to the window, each next one is
    cfg.scale_step smaller, down to the level where the shorter side still holds one window."""
    scale, scales = cfg.window / (min_face or cfg.min_face_size), []
    while min(width, height) * scale >= cfg.window:
        scales.append(scale)
        scale /= cfg.scale_step
    return scales


def level_input(image: Image.Image, scale: float, stride: int) -> np.ndarray:
    """The photo (RGB, or luma for the fast scan) resized by `scale` and padded (edge pixels repeated) to multiples
    of `stride`: float32 [1, C, H, W] in [0, 1]."""
    w, h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    arr = np.atleast_3d(np.asarray(image.resize((w, h), Image.Resampling.BILINEAR)))  # uint8 [h, w, C]
    arr = np.pad(arr, ((0, -h % stride), (0, -w % stride), (0, 0)), mode="edge")  # padded as bytes: cheaper
    if arr.shape[2] == 1:  # luma: bytes to floats in one pass, a third less time than a copy and a divide in place
        return np.divide(arr[:, :, 0][None, None], np.float32(255.0), dtype=np.float32)
    x = np.ascontiguousarray(arr.transpose(2, 0, 1)[None], dtype=np.float32)  # RGB: one pass would be far slower
    x /= np.float32(255.0)
    return x


def windows(logits: np.ndarray, scale: float, cfg: LocaliserConfig, floor: float) -> np.ndarray:
    """A level's logit map [h', w'] -> [K, 5] boxes (x, y, width, height in photo px, probability) of the windows
    scoring at least `floor`."""
    p = sigmoid(logits)
    i, j = np.nonzero(p >= floor)
    side = cfg.window / scale
    return np.stack([j * cfg.stride / scale, i * cfg.stride / scale, np.full(len(i), side), np.full(len(i), side),
                     p[i, j]], axis=1) if len(i) else np.zeros((0, 5))


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box (x, y, w, h, ...) with each of boxes [K, >=4]."""
    x0, y0 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y1 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    return inter / (box[2] * box[3] + boxes[:, 2] * boxes[:, 3] - inter)


def merge(boxes: np.ndarray, nms_iou: float, max_faces: int, min_neighbours: int = 1) -> np.ndarray:
    """Non-maximum suppression, best first; each kept box becomes the score-weighted mean of itself and the
    boxes it suppressed, and keeps its own score; a group of fewer than `min_neighbours` boxes (itself included)
    is dropped. [K, 5] -> [M, 5], highest score first."""
    order = boxes[np.argsort(-boxes[:, 4], kind="stable")]
    kept = []
    while len(order) and len(kept) < max_faces:
        overlap = iou(order[0], order)
        group = order[overlap > nms_iou]  # includes order[0] itself (IoU 1)
        w = group[:, 4:5] + 1e-12  # a score can underflow to 0
        if len(group) >= min_neighbours:
            kept.append(np.r_[(group[:, :4] * w).sum(0) / w.sum(), order[0, 4]])
        order = order[overlap <= nms_iou]
    return np.array(kept).reshape(-1, 5)


def suppress(boxes: np.ndarray, nms_iou: float) -> np.ndarray:
    """Plain non-maximum suppression, best first: a box overlapping a kept one by more than nms_iou is dropped,
    and the kept boxes stay as they are (each is the crop its score belongs to). [K, 5] -> [M, 5]."""
    order = boxes[np.argsort(-boxes[:, 4], kind="stable")]
    kept = []
    while len(order):
        kept.append(order[0])
        order = order[1:][iou(order[0], order[1:]) <= nms_iou]
    return np.array(kept).reshape(-1, 5)


def drop_nested(boxes: np.ndarray, overlap: float) -> np.ndarray:
    """Best first, a box is dropped when a kept (better) box covers more than `overlap` of the smaller of the
    two: [K, 5] -> [M, 5], highest score first. A box only ever goes for a better one, so the faces at a higher
    threshold are still a subset of those at a lower one."""
    order = boxes[np.argsort(-boxes[:, 4], kind="stable")]
    kept: list[np.ndarray] = []
    for box in order:
        if kept and (covered(box, np.array(kept)) > overlap).any():
            continue
        kept.append(box)
    return np.array(kept).reshape(-1, 5)


def covered(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """The intersection of one box (x, y, w, h, ...) with each of boxes [K, >=4], over the smaller one's area."""
    x0, y0 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[0] + box[2], boxes[:, 0] + boxes[:, 2])
    y1 = np.minimum(box[1] + box[3], boxes[:, 1] + boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    return inter / np.minimum(box[2] * box[3], boxes[:, 2] * boxes[:, 3])


def refine_squares(boxes: np.ndarray, cfg: LocaliserConfig, width: int, height: int) -> np.ndarray:
    """Candidates [K, >=4] -> the squares their refining crops cut, [K, G, 3] (left, top, side) in photo px, G the
    grid's size with the unmoved square first: the candidate's square (its larger side, the same centre) moved by
    each shift along x and y and resized by each scale, then moved (not shrunk) to lie inside the photo."""
    grid = np.array([(dx, dy, ds) for ds in cfg.refine_scales for dy in cfg.refine_shifts
                     for dx in cfg.refine_shifts], dtype=np.float64)  # [G, 3]
    side0 = np.maximum(boxes[:, 2], boxes[:, 3])[:, None]  # [K, 1]
    cx = boxes[:, 0:1] + boxes[:, 2:3] / 2 + grid[:, 0] * side0  # [K, G]
    cy = boxes[:, 1:2] + boxes[:, 3:4] / 2 + grid[:, 1] * side0
    side = np.minimum(side0 * grid[:, 2], min(width, height))
    left = np.clip(cx - side / 2, 0, width - side)
    top = np.clip(cy - side / 2, 0, height - side)
    return np.stack([left, top, side], axis=-1)


def square_crops(image: Image.Image, squares: np.ndarray, size: int) -> np.ndarray:
    """Squares [n, 3] (left, top, side) of a photo (RGB, or its luma), each resized to size x size -> float32
    [n, C, size, size], C its channels."""
    crops = [np.atleast_3d(np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=(l, t, l + s, t + s))))
             for l, t, s in squares]
    return np.ascontiguousarray(np.stack(crops).transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


# Refining crops scored per ONNX Runtime run: 64 windows hold ~26 MB of activations (~100 bytes a pixel).
REFINE_BATCH = 64


def refine(image: Image.Image, boxes: np.ndarray, cfg: LocaliserConfig, score) -> np.ndarray:
    """Candidates [K, 5] -> [K, 5]: each the best of its refining crops (refine_squares), with that crop's
    probability; `score`: float32 [n, C, 64, 64] crops of `image` -> face probability [n]. A tie keeps the
    unmoved square."""
    if not len(boxes):
        return np.zeros((0, 5))
    squares = refine_squares(boxes, cfg, image.width, image.height)  # [K, G, 3]
    flat = squares.reshape(-1, 3)
    probs = np.concatenate([score(square_crops(image, flat[i:i + REFINE_BATCH], cfg.window))
                            for i in range(0, len(flat), REFINE_BATCH)]).reshape(squares.shape[:2])  # [K, G]
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


def regress(image: Image.Image, boxes: np.ndarray, cfg: LocaliserConfig, offsets, score) -> np.ndarray:
    """Refined faces [K, 5] (squares) -> [K, 5]: each moved by the box head (moved_squares) and verified again
    there; its score the geometric mean of both crops' probabilities, so a face must look like one where the
    head puts it too (a texture that fools one crop rarely fools the moved one). `offsets`: crops float32
    [n, C, 64, 64] -> the box head's [n, 3]; `score`: crops -> face probability [n]."""
    out = []
    for start in range(0, len(boxes), REFINE_BATCH):
        part = boxes[start:start + REFINE_BATCH]
        moved = moved_squares(part[:, :3], offsets(square_crops(image, part[:, :3], cfg.window)), cfg.box_step,
                              image.width, image.height)
        probs = score(square_crops(image, moved, cfg.window))
        out.append(np.c_[moved, moved[:, 2], np.sqrt(part[:, 4] * probs)])
    return np.concatenate(out) if out else np.zeros((0, 5))


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boxes [M, 5] -> integer pixel boxes inside the photo, [M, 5] (x, y, w, h, probability)."""
    out = boxes.copy()
    x0, y0 = np.clip(np.rint(boxes[:, 0]), 0, width - 1), np.clip(np.rint(boxes[:, 1]), 0, height - 1)
    x1 = np.clip(np.rint(boxes[:, 0] + boxes[:, 2]), x0 + 1, width)
    y1 = np.clip(np.rint(boxes[:, 1] + boxes[:, 3]), y0 + 1, height)
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = x0, y0, x1 - x0, y1 - y0
    return out


class Localiser:
    """One exported scan graph and the config to run it: `locate(image)` -> faces in the photo's pixels. With
    `fast` (the model's fast-scan graphs, training/fast_scan.py) the pyramid is scanned by those, and the refining
    crops are cut from the same image (the luma, where the fast scan takes luma) and scored by them: stage 1's
    features of a whole window and the exact head, which is the scan graph on that window."""

    def __init__(self, scan_graph, cfg: LocaliserConfig, threads: int = 0, fast: FastGraphs | None = None,
                 box_head=None):
        self.session = session(scan_graph, threads)
        self.cfg, self.fast = cfg, fast
        # The box head reads the fast scan's features: without a fast scan there is none to read.
        self.box = session(box_head, threads) if box_head is not None and fast is not None else None

    @classmethod
    def for_model(cls, models_dir: Path, entry: dict, cfg: LocaliserConfig, threads: int = 0,
                  level_scan: bool = True) -> Localiser:
        """A manifest entry's localiser: the fast scan, its level scan and the box head where the entry has them
        (older manifests do not); level_scan=False leaves the level scan out."""
        fast = FastGraphs.from_entry(models_dir, entry, threads, level_scan) if "fast_scan" in entry else None
        box = models_dir / entry["graphs"][BOX_HEAD_GRAPH] if "box_head" in entry else None
        return cls(models_dir / entry["graphs"]["scanner"], cfg, threads, fast, box)

    def logit_map(self, x: np.ndarray) -> np.ndarray:
        name_in, (name_out,) = GRAPH_IO["scanner"]
        return self.session.run([name_out], {name_in: x})[0][0]

    def level_logits(self, image: Image.Image, scale: float, floor: float) -> np.ndarray:
        """One pyramid level's logit map, exact wherever it reaches `floor` (with the fast scan, `image` is the
        photo's luma where its input is luma; with a level scan, close to exact: training/level_scan.py)."""
        if self.fast is None:
            return self.logit_map(level_input(image, scale, self.cfg.stride))
        s = self.fast.input_scale  # the level scan's levels are this much smaller, and so is their stride
        x = level_input(image, scale * s, round(self.cfg.stride * s))
        return self.fast.logit_map(x, floor, self.cfg.fast_scan_margin)

    def locate(self, image: Image.Image, threshold: float | None = None, min_face: int | None = None,
               max_faces: int | None = None) -> np.ndarray:
        """An RGB photo (EXIF orientation applied) -> [M, 5] (x, y, w, h, probability), best first. A crop no
        larger than cfg.crop_max_side is one window: its centre square, scored as a whole."""
        cfg = self.cfg
        threshold = cfg.threshold if threshold is None else threshold
        w, h = image.size
        if max(w, h) <= cfg.crop_max_side:
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            square = image.crop((left, top, left + side, top + side))
            p = float(sigmoid(self.logit_map(level_input(square, cfg.window / side, cfg.stride))[0, 0]))
            return np.array([[left, top, side, side, p]]) if p >= threshold else np.zeros((0, 5))
        faces = self.faces(image, min_face, max(max_faces or 0, cfg.max_faces))
        return clip_boxes(faces[faces[:, 4] >= threshold][:max_faces or cfg.max_faces], w, h)

    def faces(self, image: Image.Image, min_face: int | None = None, candidates: int | None = None) -> np.ndarray:
        """Both stages, before the threshold -> [M, 5] photo px (floats), best first."""
        scanned = self.scanned(image)  # converted once: both stages cut from it
        return self.verified(scanned, self.candidates(scanned, min_face, candidates))

    def candidates(self, image: Image.Image, min_face: int | None = None, most: int | None = None) -> np.ndarray:
        """Stage 1: the scan's windows from scan_threshold on, merged; at most `most` (cfg.max_faces)."""
        cfg = self.cfg
        return merge(self.windows(image, cfg.scan_threshold, min_face), cfg.nms_iou, most or cfg.max_faces,
                     cfg.min_neighbours)

    def verified(self, image: Image.Image, candidates: np.ndarray) -> np.ndarray:
        """Stage 2: each candidate refined and scored as a crop, overlaps suppressed, best first; with a box
        head, then moved to where it says the face is and verified there (`regress`), overlaps suppressed again;
        last, a face inside a better one is dropped (`drop_nested`)."""
        scanned = self.scanned(image)
        refined = suppress(refine(scanned, candidates, self.cfg, self.crop_probabilities), self.cfg.nms_iou)
        if self.box is not None:
            refined = suppress(regress(scanned, refined, self.cfg, self.box_offsets, self.crop_probabilities),
                               self.cfg.nms_iou)
        return drop_nested(refined, self.cfg.nested_overlap)

    def box_offsets(self, crops: np.ndarray) -> np.ndarray:
        """Crops of `scanned` float32 [n, C, 64, 64] -> the box head's [n, 3] (dx, dy, log side)."""
        name_in, (name_out,) = GRAPH_IO[BOX_HEAD_GRAPH]
        return self.box.run([name_out], {name_in: self.fast.features(crops)})[0]

    def scanned(self, image: Image.Image) -> Image.Image:
        """What the pyramid and the refining crops are cut from: the photo, or its luma for a luma fast scan."""
        return self.fast.level_image(image) if self.fast is not None else image

    def crop_probabilities(self, crops: np.ndarray) -> np.ndarray:
        """Crops of `scanned`, float32 [n, C, 64, 64] -> face probability [n]: the scan graph on whole windows is
        the classifier, and so are the fast graphs."""
        if self.fast is not None:
            return sigmoid(self.fast.window_logits(crops))
        name_in, (name_out,) = GRAPH_IO["scanner"]
        return sigmoid(self.session.run([name_out], {name_in: crops})[0].reshape(len(crops)))

    def windows(self, image: Image.Image, floor: float, min_face: int | None = None) -> np.ndarray:
        """Every window of every pyramid level scoring at least `floor`, before merging: [K, 5] photo px."""
        scanned = self.scanned(image)
        found = [windows(self.level_logits(scanned, s, floor), s, self.cfg, floor)
                 for s in pyramid(image.width, image.height, self.cfg, min_face)]
        return np.concatenate(found) if found else np.zeros((0, 5))


def session(graph, threads: int = 0) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # A photo alternates between sessions (stage 1, stage 2, the refining crops); threads left spinning after one
    # session's run take the cores from the next one's: 1920x1280 photos 1.30 -> 0.97 s, 640x480 0.33 -> 0.20 s.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])


# Windows scored per run of the window head: 4096 x 72 x 4 x 4 float32 is 19 MB of features.
HEAD_BATCH = 4096


@dataclass
class FastGraphs:
    """A model's two fast-scan graphs (training/fast_scan.py), what its level looks like, and its level scan
    (training/level_scan.py) where it has one: pyramid levels are scanned by that, at its input scale."""

    scan: ort.InferenceSession
    head: ort.InferenceSession
    luma: bool  # the level is the photo's luma (PIL "L"), else RGB
    level: ort.InferenceSession | None = None  # the level scan: stage 1 for pyramid levels, int8
    input_scale: float = 1.0  # the level scan's level size, as a share of the fast scan's

    @classmethod
    def from_entry(cls, models_dir: Path, entry: dict, threads: int = 0, level_scan: bool = True) -> FastGraphs:
        """level_scan=False: the entry's level scan (where it has one) is left out, levels go through stage 1."""
        graphs = entry["graphs"]
        level = level_scan and LEVEL_SCAN_GRAPH in entry
        return cls(session(models_dir / graphs["fast_scan"], threads), session(models_dir / graphs["window_head"],
                   threads), entry["fast_scan"]["input"] == "luma",
                   session(models_dir / graphs[LEVEL_SCAN_GRAPH], threads) if level else None,
                   entry[LEVEL_SCAN_GRAPH]["input_scale"] if level else 1.0)

    def level_image(self, image: Image.Image) -> Image.Image:
        return image.convert("L") if self.luma and image.mode != "L" else image

    def logit_map(self, x: np.ndarray, floor: float, margin: float) -> np.ndarray:
        """A level [1, C, H, W] (at input_scale of the fast scan's size) -> its logit map [H/16 - 3, W/16 - 3]
        (H, W of the fast scan's level): stage 1's (the level scan's where there is one), with stage 2's logits
        at every position within `margin` of `floor`'s logit."""
        scan_in, scan_out = GRAPH_IO["fast_scan"]
        head_in, (head_out,) = GRAPH_IO["window_head"]
        approx, features = (self.level or self.scan).run(list(scan_out), {scan_in: x})
        logits = approx[0]
        rows, cols = survivors(logits, floor, margin)
        for start in range(0, len(rows), HEAD_BATCH):
            r, c = rows[start:start + HEAD_BATCH], cols[start:start + HEAD_BATCH]
            logits[r, c] = self.head.run([head_out], {head_in: window_features(features[0], r, c)})[0]
        return logits

    def features(self, crops: np.ndarray) -> np.ndarray:
        """Whole windows [n, C, 64, 64] -> stage 1's conv features [n, 72, 4, 4] (the float32 fast scan's)."""
        scan_in, (_, features_out) = GRAPH_IO["fast_scan"]
        return self.scan.run([features_out], {scan_in: crops})[0]

    def window_logits(self, crops: np.ndarray) -> np.ndarray:
        """Whole windows [n, C, 64, 64] -> their exact face logits [n]: stage 1's features, then stage 2."""
        head_in, (head_out,) = GRAPH_IO["window_head"]
        return self.head.run([head_out], {head_in: self.features(crops)})[0].reshape(len(crops))
