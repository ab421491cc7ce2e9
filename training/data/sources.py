"""One interface, three sources: each resolves to an H5Source (lazy reads) plus a seeded, stratified split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data.builtin import EXTRA_NON_FACES, builtin_path
from training.data.folders import convert_folders
from training.data.h5 import DataError, H5Source


def open_source(source: str, *, h5: str = "", faces: str = "", non_faces: str = "",
                cache_dir: str = "", builtin_non_faces: int = EXTRA_NON_FACES, seed: int = 0) -> H5Source:
    cache = Path(cache_dir).expanduser()
    if source == "builtin":
        return H5Source(builtin_path(cache, builtin_non_faces, seed), name="builtin")
    if source == "h5":
        return H5Source(h5, name="h5")
    if source == "folders":
        path, skipped = convert_folders(Path(faces), Path(non_faces), cache)
        src = H5Source(path, name="folders")
        src.skipped = skipped
        return src
    raise DataError(f"unknown source {source!r} (expected builtin, h5 or folders)")


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (train indices, val indices), each class split in the same proportion; sorted for h5 locality."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in (0, 1):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        n_val = max(1, int(round(len(idx) * val_fraction)))
        if n_val >= len(idx):
            raise DataError(f"only {len(idx)} {'faces' if cls else 'non-faces'}: too few to hold out a "
                            f"validation split of {val_fraction:.0%}")
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def manifest_split(data: dict, cache_dir: str) -> tuple[H5Source, np.ndarray, np.ndarray]:
    """Re-open the data a manifest's models were trained on (its `data` entry) and the same split:
    -> (source, train indices, val indices)."""
    name = data.get("source", "builtin")
    source = open_source(name, h5=data.get("path", "") if name == "h5" else "", faces=data.get("faces", ""),
                         non_faces=data.get("non_faces", ""), cache_dir=cache_dir,
                         builtin_non_faces=data.get("builtin_non_faces", EXTRA_NON_FACES), seed=data["seed"])
    train_idx, val_idx = stratified_split(source.labels, data["val_fraction"], data["seed"])
    return source, train_idx, val_idx
