"""Two folders of images (faces / not faces), any size, any common format.

Decoding hundreds of thousands of JPEGs every epoch would make the CPU, not the model, the bottleneck,
so the folders are converted once, in streaming chunks, into a cached HDF5 file in the lab layout and
read lazily from there. Unreadable files are skipped and counted. When the face folder holds
sub-folders (e.g. LF/ LM/ DF/ DM/), each face remembers its sub-folder as its group.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from training.data.h5 import DataError, H5Writer
from training.data.image import load_image

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ppm", ".pgm"}
NON_FACE_GROUP = -1


def list_images(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataError(f"not a directory: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) found under {root}")
    return files


def face_groups(root: Path, files: list[Path]) -> tuple[np.ndarray, list[str]]:
    """Group index per face from its first sub-folder under root; [] names when faces lie flat."""
    tops = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else "" for p in files]
    names = sorted({t for t in tops if t})
    if not names or "" in tops:
        return np.full(len(files), NON_FACE_GROUP), []
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[t] for t in tops]), names


# Part of the cache key; bumped whenever the decoding in training/data/image.py changes, so a cache converted
# the old way is not reused. 2: JPEGs decode at a reduced DCT scale.
DECODE_VERSION = "2"


def cache_key(*lists: list[Path]) -> str:
    h = hashlib.sha256(f"decode {DECODE_VERSION}\n".encode())
    for files in lists:
        for p in files:
            st = p.stat()
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def convert_folders(faces_dir: Path, non_faces_dir: Path, cache_dir: Path, chunk: int = 512) -> tuple[Path, int]:
    """-> (cached h5 path, number of unreadable files skipped). Re-uses the cache if nothing changed."""
    faces, non_faces = list_images(faces_dir), list_images(non_faces_dir)
    path = cache_dir / f"folders-{cache_key(faces, non_faces)}.h5"
    skipped_file = path.with_suffix(".skipped")
    if path.is_file():
        return path, int(skipped_file.read_text()) if skipped_file.is_file() else 0
    groups, names = face_groups(faces_dir, faces)
    items = [(p, 1, g) for p, g in zip(faces, groups)] + [(p, 0, NON_FACE_GROUP) for p in non_faces]
    skipped = 0
    with H5Writer(path, group_names=names) as writer:
        for start in tqdm(range(0, len(items), chunk), desc="decoding images", unit="chunk"):
            imgs, labels, grp = [], [], []
            for p, y, g in items[start:start + chunk]:
                try:
                    imgs.append(load_image(p))
                except ValueError as exc:
                    skipped += 1
                    log.debug("skipping %s: %s", p, exc)
                    continue
                labels.append(y)
                grp.append(g)
            if imgs:
                writer.append(np.stack(imgs), np.array(labels), np.array(grp))
    skipped_file.write_text(str(skipped))
    return path, skipped
