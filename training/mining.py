"""Hard-negative mining for the scan (Sung & Poggio 1998; Viola & Jones 2001): scan face-free real scenes with
the models just trained, keep their false alarms, add them to the training non-faces, and train again.

A photo holds hundreds of thousands of background windows, so the "not a face" side must be far stronger than a
crop classifier needs; random crops of the scenes (the built-in set's non-faces) cover only a few thousand of
them. The scenes are the built-in set's own face-free pictures (scikit-image and scikit-learn samples without
people), so nothing a later evaluation uses is mined.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image

from training.data.builtin import low_res, natural_pictures
from training.data.folders import NON_FACE_GROUP
from training.data.h5 import H5Source, H5Writer
from training.data.image import prepare
from training.localiser import Localiser, LocaliserConfig, merge

log = logging.getLogger("training")


def false_alarms(scan_graph: Path, pictures: list[np.ndarray], cfg: LocaliserConfig, floor: float,
                 per_picture: int, builtin_look: bool) -> np.ndarray:
    """Every window of the face-free pictures that the scan graph scores >= floor (overlaps merged at IoU 0.5,
    at most per_picture each, best first), cut out and prepared like the training non-faces:
    uint8 [K, 64, 64, 3]."""
    localiser = Localiser(scan_graph, cfg)
    crops = []
    for array in pictures:
        image = Image.fromarray(array).convert("RGB")
        boxes = merge(localiser.windows(image, floor), 0.5, per_picture)
        for x, y, w, h, _ in boxes:
            crop = image.crop((int(x), int(y), int(x + w), int(y + h)))
            crops.append(low_res(crop) if builtin_look else prepare(crop))
    return np.stack(crops) if crops else np.zeros((0, 64, 64, 3), np.uint8)


def mine(scan_graphs: list[Path], source: H5Source, out: Path, cfg: LocaliserConfig, builtin_look: bool,
         floor: float = 0.5, per_picture: int = 200) -> int:
    """The models' false alarms on the face-free pictures, written with a copy of the source (same indices
    first, groups kept) as non-faces to `out` -> how many were added. The caller adds their indices to the
    training split only: the held-out split stays as it was."""
    pictures = natural_pictures()
    crops = np.concatenate([false_alarms(g, pictures, cfg, floor, per_picture, builtin_look) for g in scan_graphs])
    grouped = source.groups is not None and bool(source.group_names)
    with H5Writer(out, group_names=source.group_names if grouped else None) as writer:
        for start in range(0, len(source), 1024):
            idx = np.arange(start, min(start + 1024, len(source)))
            writer.append(source.read(idx), source.labels[idx], source.groups[idx] if grouped else None)
        writer.append(crops, np.zeros(len(crops)), np.full(len(crops), NON_FACE_GROUP) if grouped else None)
    log.info("mined %d false alarms on %d face-free pictures", len(crops), len(pictures))
    return len(crops)
