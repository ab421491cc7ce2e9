"""The localiser's fast scan: the scan graph's face logit map for about half the work, as a two-stage cascade
inside one network, with no new training.

Most of ScanNet's time is its dense layer, rewritten as a 4x4 conv from 72 to 512 channels (590 k multiply-adds
a window position, against ~250 k for all the conv blocks). Nearly every position of a photo is far from a face,
so the fast scan computes that layer twice over:

1. `FastScan`, over the whole pyramid level: the conv blocks, then the dense layer at low rank (its weight's
   truncated SVD, W ~ U_r S_r V_r: a 4x4 conv to r channels, then a 1x1 conv back to 512; r = 64 is 5.5x fewer
   multiply-adds), then the ReLU and the face-logit row. It gives an approximate logit map, and the conv
   features it was computed from.
2. `WindowHead`, only at the positions whose approximate logit is within `fast_scan_margin` of the scan's
   candidate threshold: the 4x4x72 features of those windows through the exact dense layer and head.

The logit map is then exact wherever a window could become a candidate, and below the threshold elsewhere. A
window is lost only where the low-rank error exceeds the margin. `choose_rank` measures that error on real
pictures (the face-free scenes the mining scans, and the packaged faces) and takes the smallest rank, from the
localiser's `fast_scan_rank` up, doubling, whose largest error near the threshold is at most half the margin;
full rank (the layer itself) always qualifies, so an export never fails on it.

Grey models (the built-in data's front end) take the level as one luma channel: a third of the resizing and
copying, and the graph's own luma conv gone. The luma is PIL's ("L": ITU-R 601-2, the same weights as the
front end's, rounded to 8 bits), so the map differs from the RGB scan's by that rounding only.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn

from training.contract import GRAPH_IO
from training.model import DBVAE, FaceCNN, FrontEnd

FEATURE_SIDE = 4  # a window's conv features: [72, 4, 4]


def scan_channels(front_end: str) -> int:
    """The fast scan's input channels: 1 (luma) for a grey front end, else 3 (RGB)."""
    return 1 if "grey" in front_end else 3


class LumaFrontEnd(nn.Module):
    """A grey front end for an input that is luma already: [N, 1, H, W] -> [N, 1, H, W] (low-passed if asked)."""

    def __init__(self, lowpass: bool):
        super().__init__()
        self.lowpass = lowpass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.lowpass:
            return x
        return F.interpolate(F.avg_pool2d(x, 2), size=x.shape[-2:], mode="bilinear", align_corners=False)


def low_rank(dense: nn.Conv2d, rank: int) -> tuple[nn.Conv2d, nn.Conv2d]:
    """The 4x4 dense conv [512, 72, 4, 4] as its rank-r truncated SVD: a 4x4 conv 72 -> r, then a 1x1 conv r -> 512
    with the dense layer's bias."""
    out = dense.out_channels
    u, s, vh = torch.linalg.svd(dense.weight.detach().reshape(out, -1).double(), full_matrices=False)
    project = nn.Conv2d(dense.in_channels, rank, dense.kernel_size, bias=False)
    expand = nn.Conv2d(rank, out, 1)
    with torch.no_grad():
        project.weight.copy_(vh[:rank].reshape(rank, *dense.weight.shape[1:]).float())
        expand.weight.copy_((u[:, :rank] * s[:rank]).reshape(out, rank, 1, 1).float())
        expand.bias.copy_(dense.bias)
    return project, expand


def export_scan(model: FaceCNN | DBVAE) -> nn.Module:
    """The ScanNet both stages are cut from: the model's export copy (training/export.py: for_export) rewritten
    as convolutions (training/localiser.py)."""
    from training.export import for_export
    from training.localiser import ScanNet

    return ScanNet(for_export(model)).eval()


class FastScan(nn.Module):
    """Stage 1: level [N, C, H, W] (C from scan_channels; H, W multiples of 16) -> (approximate logit map
    [N, H/16 - 3, W/16 - 3], conv features [N, 72, H/16, W/16]), cut from a ScanNet (export_scan)."""

    def __init__(self, scan: nn.Module, rank: int):
        super().__init__()
        self.features = copy.deepcopy(scan.features)
        front = self.features[0]
        if isinstance(front, FrontEnd) and front.grey:
            self.features[0] = LumaFrontEnd(front.lowpass)
        self.project, self.expand = low_rank(scan.dense, rank)
        self.head = copy.deepcopy(scan.head)

    def forward(self, level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(level)  # [N, 72, H/16, W/16]
        h = torch.relu(self.expand(self.project(f)))  # [N, 512, H/16 - 3, W/16 - 3]
        return self.head(h).squeeze(1), f


class WindowHead(nn.Module):
    """Stage 2: the conv features of K windows [K, 72, 4, 4] -> their exact face logits [K] (ScanNet's dense
    layer and head, on one position each)."""

    def __init__(self, scan: nn.Module):
        super().__init__()
        self.dense, self.head = copy.deepcopy(scan.dense), copy.deepcopy(scan.head)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.dense(features))).reshape(-1)  # [K, 1, 1, 1] -> [K]


def window_features(features: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """One level's features [72, h, w] -> those of the windows at logit-map positions (rows, cols): [K, 72, 4, 4]."""
    k = np.arange(FEATURE_SIDE)
    patches = features[:, rows[:, None, None] + k[None, :, None], cols[:, None, None] + k[None, None, :]]
    return np.ascontiguousarray(patches.transpose(1, 0, 2, 3))  # [72, K, 4, 4] -> [K, 72, 4, 4]


def survivors(approx: np.ndarray, scan_threshold: float, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions of an approximate logit map that stage 2 must score exactly: within `margin` of the logit of
    `scan_threshold`, or above it."""
    return np.nonzero(approx >= logit(scan_threshold) - margin)


def logit(p: float) -> float:
    """The logit of a probability: -inf at 0, +inf at 1."""
    return -np.inf if p <= 0 else np.inf if p >= 1 else float(np.log(p / (1.0 - p)))


# ---------------------------------------------------------------------------------------------
# Export, with parity and the low-rank error measured on real pictures


def approximation_error(scan: nn.Module, ranks: list[int], levels: list[torch.Tensor], scan_threshold: float,
                        margin: float) -> list[dict]:
    """Stage 1 at each rank against the exact logits, on every window of `levels` ([1, C, H, W] each) -> per rank
    the largest error over windows whose exact or approximate logit is within 2 x margin of the threshold, and the
    fraction of windows stage 2 would score."""
    thr = logit(scan_threshold)
    fast, head = FastScan(scan, ranks[0]).eval(), WindowHead(scan).eval()  # the conv blocks: the same at any rank
    layers = [low_rank(scan.dense, r) for r in ranks]
    worst, passed, windows = np.zeros(len(ranks)), np.zeros(len(ranks)), 0
    with torch.no_grad():
        for level in levels:
            f = fast.features(level)  # [1, 72, h, w]
            patches = F.unfold(f, FEATURE_SIDE)[0].T.reshape(-1, f.shape[1], FEATURE_SIDE, FEATURE_SIDE)
            exact = head(patches).numpy()
            windows += len(exact)
            for i, (project, expand) in enumerate(layers):
                approx = head.head(torch.relu(expand(project(f)))).reshape(-1).numpy()
                near = np.maximum(exact, approx) >= thr - 2 * margin
                if near.any():
                    worst[i] = max(worst[i], float(np.abs(exact - approx)[near].max()))
                passed[i] += int((approx >= thr - margin).sum())
    return [{"rank": r, "max_error_near_threshold": float(w), "windows": windows,
             "stage2_fraction": float(p / max(windows, 1))} for r, w, p in zip(ranks, worst, passed)]


def choose_rank(scan: nn.Module, channels: int, rank: int, margin: float, scan_threshold: float) -> dict:
    """The smallest rank from `rank` up, doubling, whose error near the threshold on real pictures
    (calibration_levels, with `channels` of input) is at most half the margin; full rank (the layer itself,
    error ~0) always is."""
    dense = scan.dense
    full = min(dense.out_channels, dense.in_channels * dense.kernel_size[0] * dense.kernel_size[1])
    ranks = []
    while rank < full:
        ranks.append(rank)
        rank *= 2
    ranks.append(full)
    measured = approximation_error(scan, ranks, calibration_levels(channels), scan_threshold, margin)
    return next(m for m in measured if 2 * m["max_error_near_threshold"] <= margin or m["rank"] == full)


def calibration_levels(channels: int, side: int = 640) -> list[torch.Tensor]:
    """Real pictures as scan levels: the face-free scenes the mining scans (at most `side` px, and half that),
    and the 747 packaged faces tiled 16 to a 256x256 level, in the built-in look; as luma (PIL's, as the service
    makes it) for channels == 1."""
    from PIL import Image

    from training.data.builtin import natural_pictures, packaged_low_res

    images = []
    for picture in natural_pictures():
        for s in (side, side // 2):
            im = Image.fromarray(picture).convert("RGB")
            im.thumbnail((s, s))
            images.append(im.crop((0, 0, im.width // 16 * 16, im.height // 16 * 16)))
    faces, _ = packaged_low_res()  # uint8 [N, 64, 64, 3]
    for start in range(0, len(faces) - 15, 16):
        tile = faces[start:start + 16].reshape(4, 4, 64, 64, 3).transpose(0, 2, 1, 3, 4).reshape(256, 256, 3)
        images.append(Image.fromarray(np.ascontiguousarray(tile)))
    levels = []
    for im in images:
        x = np.atleast_3d(np.asarray(im.convert("L") if channels == 1 else im)).transpose(2, 0, 1)
        levels.append(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32) / 255.0)[None])
    return levels


def export_fast_scan(model: FaceCNN | DBVAE, scan_path: Path, head_path: Path, rank: int, margin: float,
                     scan_threshold: float, seed: int = 0) -> dict:
    """Export both stages at the rank choose_rank picks from `rank` up; check that stage 2 on stage 1's features
    is the scan graph exactly (1e-4, in ONNX Runtime). -> the manifest entry's "fast_scan" record."""
    from training.export import PARITY_ATOL, ParityError, export_graph
    from training.localiser import ScanNet

    model = model.eval()
    channels = scan_channels(model.cfg.front_end)
    scan = export_scan(model)
    chosen = choose_rank(scan, channels, rank, margin, scan_threshold)
    fast, head = FastScan(scan, chosen["rank"]).eval(), WindowHead(scan).eval()
    scan_in, scan_out = GRAPH_IO["fast_scan"]
    head_in, head_out = GRAPH_IO["window_head"]
    side = model.cfg.image_size
    worst = export_graph(fast, torch.rand(1, channels, side, side), scan_path, scan_in, list(scan_out), (1, 2),
                         seed, spatial_multiple=16)
    worst = max(worst, export_graph(head, torch.randn(2, model.cfg.filters[-1], FEATURE_SIDE, FEATURE_SIDE),
                                    head_path, head_in, list(head_out), (1, 7), seed))
    # The two stages together against the trained model's scan (ScanNet, unfolded), on colour images.
    scan_session, head_session = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                                  for p in (scan_path, head_path))
    exact_scan = ScanNet(model).eval()
    g = torch.Generator().manual_seed(seed)
    for shape in ((1, 3, 64, 64), (1, 3, 96, 160)):
        rgb = torch.rand(shape, generator=g)
        # The float luma, by the front end's own weights, before any rounding.
        x = FrontEnd("grey", replicate=False)(rgb) if channels == 1 else rgb
        _, features = scan_session.run(list(scan_out), {scan_in: x.numpy()})
        rows, cols = np.indices((features.shape[2] - 3, features.shape[3] - 3)).reshape(2, -1)
        got = head_session.run(list(head_out), {head_in: window_features(features[0], rows, cols)})[0]
        with torch.no_grad():
            expected = exact_scan(rgb).numpy().reshape(-1)
        worst = max(worst, float(np.abs(got - expected).max()))
    if worst > PARITY_ATOL:
        raise ParityError(f"{head_path}: the fast scan's two stages differ from the scan by {worst:.2e}")
    return {"input": "luma" if channels == 1 else "rgb", "parity_max_abs_error": worst, **chosen}
