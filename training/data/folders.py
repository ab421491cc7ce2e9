"""Two folders of images (faces / not faces), any size, any common format.

Decoding hundreds of thousands of JPEGs every epoch would make the CPU, not the model, the bottleneck,
so the folders are converted once, in streaming chunks, into a cached HDF5 file in the lab layout and
read lazily from there. Unreadable files are skipped and counted. When the face folder holds
sub-folders (e.g. LF/ LM/ DF/ DM/), each face remembers its sub-folder as its group; a CSV of `path,group`
(paths relative to the face folder) names the groups instead. The non-face folder may be left out for an
evaluation of faces alone (the fairness card).
"""

from __future__ import annotations

import csv
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


def csv_groups(root: Path, files: list[Path], table: Path) -> tuple[np.ndarray, list[str]]:
    """Group index per face from a `path,group` CSV (path relative to root); a face not in it has no group. A row
    naming a file that is not among the faces is an error: a typo would silently drop faces from a group."""
    try:
        with open(table, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise DataError(f"cannot read the group table {table}: {exc}") from exc
    if rows and not {"path", "group"} <= set(rows[0]):
        raise DataError(f"{table}: expected the columns path,group, found {','.join(rows[0])}")
    by_path = {Path(r["path"]).as_posix(): r["group"].strip() for r in rows}
    known = {p.relative_to(root).as_posix() for p in files}
    unknown = sorted(set(by_path) - known)
    if unknown:
        raise DataError(f"{table} names {len(unknown)} file(s) not found under {root}, e.g. {unknown[0]}")
    names = sorted({g for g in by_path.values() if g})
    index = {n: i for i, n in enumerate(names)}
    rel = [p.relative_to(root).as_posix() for p in files]
    return np.array([index.get(by_path.get(r, ""), NON_FACE_GROUP) for r in rel], dtype=np.int64), names


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


def convert_folders(faces_dir: Path, non_faces_dir: Path | None, cache_dir: Path, chunk: int = 512,
                    groups_csv: Path | None = None) -> tuple[Path, int]:
    """-> (cached h5 path, number of unreadable files skipped). Re-uses the cache if nothing changed."""
    if groups_csv is not None and not groups_csv.is_file():
        raise DataError(f"no such group table: {groups_csv}")
    faces = list_images(faces_dir)
    non_faces = list_images(non_faces_dir) if non_faces_dir is not None else []
    extra = [groups_csv] if groups_csv is not None else []
    path = cache_dir / f"folders-{cache_key(faces, non_faces, extra)}.h5"
    skipped_file = path.with_suffix(".skipped")
    if path.is_file():
        return path, int(skipped_file.read_text()) if skipped_file.is_file() else 0
    groups, names = csv_groups(faces_dir, faces, groups_csv) if groups_csv else face_groups(faces_dir, faces)
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
