"""Builders for the training tests: small files in the exact on-disk formats, made from real images
(scikit-image's LFW faces and sample photographs), never drawn stand-ins."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from PIL import Image


def lfw_faces(n: int) -> np.ndarray:
    """n real LFW faces, uint8 RGB [n, 64, 64, 3]."""
    import skimage.data

    lfw = np.asarray(skimage.data.lfw_subset())[:n]
    lfw = (np.clip(lfw, 0, 1) * 255).round().astype(np.uint8) if lfw.dtype != np.uint8 else lfw
    return np.stack([np.asarray(Image.fromarray(a, "L").resize((64, 64), Image.Resampling.BILINEAR).convert("RGB"))
                     for a in lfw])


def photo_patches(n: int, seed: int = 0) -> np.ndarray:
    """n colour 64x64 patches of a real photograph (scikit-image's coffee), uint8 RGB [n, 64, 64, 3]."""
    import skimage.data

    pic = skimage.data.coffee()
    rng = np.random.default_rng(seed)
    ys, xs = rng.integers(0, pic.shape[0] - 64, n), rng.integers(0, pic.shape[1] - 64, n)
    return np.stack([pic[y:y + 64, x:x + 64] for y, x in zip(ys, xs)])


def write_lab_h5(path: Path, rgb: np.ndarray, labels: np.ndarray, **overrides) -> Path:
    """The MIT 6.S191 layout written with h5py directly: images uint8 [N,64,64,3] BGR, labels [N,1]."""
    with h5py.File(path, "w") as f:
        f.create_dataset(overrides.get("images_key", "images"), data=rgb[..., ::-1])
        f.create_dataset(overrides.get("labels_key", "labels"),
                         data=np.asarray(labels).reshape(overrides.get("labels_shape", (-1, 1))))
    return path


def write_folder(root: Path, images: np.ndarray, fmt: str = "PNG", prefix: str = "img") -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, a in enumerate(images):
        p = root / f"{prefix}{i:03d}.{fmt.lower().replace('jpeg', 'jpg')}"
        Image.fromarray(a).save(p, fmt)
        paths.append(p)
    return paths
