"""Box regression for the localiser: where the face is inside a window that the scan and the refining grid
found, so the box lands on the face and not on a window the classifier merely accepts.

The classifier is trained to call a face a face from 0.6x to 1.3x its framed size (training/augment.py), so its
probability is flat across those scales and the refining grid's best crop is often a window much larger than
the face (bench.localise: 82 px boxes on 50x62 faces). R-CNN and MTCNN learn a box regressor for this; here it
is a linear head on the window's conv features ([72, 4, 4], the fast scan's stage-1 output, the same features
the window head reads), fitted by ridge regression, in closed form, on the training faces placed off centre and
at the wrong size in real scenes, where the true offset is known:

    box = W . features + b,   box = (dx, dy, log s)

dx, dy: the face's centre from the window's, in window sides; s: the face's side over the window's. The
localiser moves each refined box by `box_step` of that (training/localiser.py `regress`) and verifies the moved
crop again. The head is fitted on the exported fast-scan graph's own features (ONNX Runtime), so it matches the
numbers the service computes, and exported as its own graph (`box_head`) with a parity check.

    python -m training.box_regression                 # fit the heads of the models in models/ again
    python -m training.box_regression --models DIR --cache-dir DIR
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from training.augment import GREY, placed
from training.contract import BOX_HEAD_FILES, BOX_HEAD_GRAPH, GRAPH_IO
from training.data.h5 import DataError, H5Source
from training.environment import environment

CHANNELS, SIDE = 72, 4  # a window's conv features: [72, 4, 4]
MIN_FACES = 5  # training faces a fit needs: at least one held out for its R^2 and four to fit


@dataclass(frozen=True)
class BoxFitConfig:
    """How the regression's training windows are drawn; the face keeps its framing, only the window moves."""

    per_face: int = 60  # windows per training face
    side_range: tuple[float, float] = (0.5, 1.5)  # face side / window side, log-uniform
    shift: float = 0.175  # largest centre offset, in face sides, along x and along y
    backgrounds: int = 400  # training non-faces the uncovered window shows
    held_out: float = 0.2  # share of the faces kept out of a first fit, whose R^2 on them is recorded
    ridge: float = 1000.0  # L2 penalty on the weights (features sum over ~1k inputs; 100 to 1000 were alike)
    seed: int = 0


def windows(faces: np.ndarray, backgrounds: np.ndarray, cfg: BoxFitConfig,
            g: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Faces uint8 [M, 64, 64, 3] -> (windows float32 [M * per_face, 3, 64, 64] in [0, 1], targets [., 3])."""
    x = torch.from_numpy(faces).permute(0, 3, 1, 2).float().div(255).repeat_interleave(cfg.per_face, 0)
    bg = torch.from_numpy(backgrounds).permute(0, 3, 1, 2).float().div(255)
    n = len(x)
    lo, hi = (math.log(v) for v in cfg.side_range)
    side = torch.exp(torch.rand(n, generator=g) * (hi - lo) + lo)
    dx, dy = ((torch.rand(n, generator=g) * 2 - 1) * cfg.shift * side for _ in range(2))
    flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    images = placed(x, side, dx, dy, flip, bg, g)
    return images.numpy(), torch.stack([dx, dy, side.log()], 1).numpy()


def luma(images: np.ndarray) -> np.ndarray:
    """float32 RGB [N, 3, H, W] -> [N, 1, H, W] as the localiser cuts crops from PIL's "L" image: 8-bit luma."""
    y = np.tensordot(GREY.numpy(), images, axes=([0], [1]))[:, None]
    return (np.round(y * 255) / 255).astype(np.float32)


def features(fast_scan: Path, images: np.ndarray, takes_luma: bool, batch: int = 512) -> np.ndarray:
    """Windows float32 [N, 3, 64, 64] -> the fast-scan graph's features, flattened [N, 1152]."""
    session = ort.InferenceSession(str(fast_scan), providers=["CPUExecutionProvider"])
    name_in, (_, name_out) = GRAPH_IO["fast_scan"]
    x = luma(images) if takes_luma else images
    out = [session.run([name_out], {name_in: x[i:i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(out).reshape(len(x), -1)


def fit(x: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression, the bias unpenalised: x [N, F], y [N, 3] -> (W [F, 3], b [3])."""
    xm, ym = x.mean(0), y.mean(0)
    xc = (x - xm).astype(np.float64)
    w = np.linalg.solve(xc.T @ xc + ridge * np.eye(x.shape[1]), xc.T @ (y - ym))
    return w.astype(np.float32), (ym - xm @ w).astype(np.float32)


def r_squared(pred: np.ndarray, y: np.ndarray) -> dict:
    r2 = 1 - ((pred - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
    return dict(zip(("dx", "dy", "log_side"), (round(float(v), 4) for v in r2)))


class BoxHead(nn.Module):
    """Features [K, 72, 4, 4] -> [K, 3] (dx, dy, log s): one linear layer."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray):
        super().__init__()
        self.linear = nn.Linear(weight.shape[0], 3)
        with torch.no_grad():
            self.linear.weight.copy_(torch.from_numpy(weight.T))
            self.linear.bias.copy_(torch.from_numpy(bias))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(features.flatten(1))


def fit_box_head(models_dir: Path, kind: str, entry: dict, source: H5Source, train_idx: np.ndarray,
                 cfg: BoxFitConfig = BoxFitConfig()) -> dict:
    """Fit and export one model's box head from its exported fast-scan graph -> its manifest record; adds the
    graph to entry["graphs"]."""
    from training.export import export_graph

    if "fast_scan" not in entry:
        raise DataError(f"the {kind} model has no fast scan, whose features the box head reads: export it again")
    rng = np.random.default_rng(cfg.seed)
    labels = source.labels[train_idx]
    faces = np.sort(train_idx[labels == 1])
    non_faces = np.sort(rng.choice(train_idx[labels == 0], min(cfg.backgrounds, int((labels == 0).sum())),
                                   replace=False))
    if len(faces) < MIN_FACES:
        raise DataError(f"the box head needs at least {MIN_FACES} training faces, the split holds {len(faces)}")
    order = rng.permutation(len(faces))
    held = max(1, round(cfg.held_out * len(faces)))
    g = torch.Generator().manual_seed(cfg.seed)
    backgrounds = source.read(non_faces)
    fast, takes_luma = models_dir / entry["graphs"]["fast_scan"], entry["fast_scan"]["input"] == "luma"
    sets = {}
    for name, part in (("fit", faces[np.sort(order[held:])]), ("held_out", faces[np.sort(order[:held])])):
        images, targets = windows(source.read(part), backgrounds, cfg, g)
        sets[name] = (features(fast, images, takes_luma), targets)
    weight, bias = fit(*sets["fit"], cfg.ridge)
    r2 = r_squared(sets["held_out"][0] @ weight + bias, sets["held_out"][1])
    # Measured, the held-out faces join the fit: the head that is exported has seen every training face.
    weight, bias = fit(*(np.concatenate(parts) for parts in zip(*sets.values())), cfg.ridge)
    file = BOX_HEAD_FILES[kind]
    name_in, names_out = GRAPH_IO[BOX_HEAD_GRAPH]
    parity = export_graph(BoxHead(weight, bias), torch.randn(2, CHANNELS, SIDE, SIDE), models_dir / file, name_in,
                          list(names_out))
    entry["graphs"][BOX_HEAD_GRAPH] = file
    return {"features": "fast_scan", "faces": int(len(faces)), "windows": int(len(faces) * cfg.per_face),
            "r2_held_out": r2, "held_out_faces": int(held),
            "parity_max_abs_error": parity, "config": asdict(cfg)}


def add_box_heads(models_dir: Path, entries: dict, source: H5Source, train_idx: np.ndarray, seed: int = 0) -> None:
    """Every model entry with a fast scan gets its box head (graph and record)."""
    for kind, entry in entries.items():
        if "fast_scan" in entry:
            entry["box_head"] = fit_box_head(models_dir, kind, entry, source, train_idx, BoxFitConfig(seed=seed))


def refit_entries(models_dir: Path, entries: dict, data: dict, cache_dir: str) -> None:
    """Box heads for manifest entries from the manifest's own training split (its `data` entry, re-opened by
    training.data.sources.manifest_split; built-in data is rebuilt in cache_dir when missing)."""
    from training.data.sources import manifest_split

    source, train_idx, _ = manifest_split(data, cache_dir)
    add_box_heads(models_dir, entries, source, train_idx, data["seed"])


def refit(models_dir: Path, cache_dir: str) -> dict:
    """The box heads of a trained models directory fitted again -> the new manifest; everything else in it stays
    but the localiser entry, written anew as reexport does."""
    from training.localiser import LocaliserConfig
    from training.manifest import load_manifest, write_manifest

    manifest = load_manifest(models_dir)
    entries = manifest["models"]
    refit_entries(models_dir, entries, manifest["data"], cache_dir)
    return write_manifest(models_dir, entries, manifest["latent_dim"], manifest["data"], manifest["training"],
                          LocaliserConfig().to_dict(), created=manifest.get("created"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.box_regression", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="models", help="the trained models' directory (default: models)")
    ap.add_argument("--cache-dir", default=str(environment().cache),
                    help="where the built-in training set is cached or rebuilt (default: FACEDET_CACHE)")
    args = ap.parse_args(argv)
    try:
        manifest = refit(Path(args.models), args.cache_dir)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for kind, entry in manifest["models"].items():
        if "box_head" in entry:
            print(f"{kind}: box head {entry['graphs'][BOX_HEAD_GRAPH]}, held-out R^2 {entry['box_head']['r2_held_out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
