"""The built-in default data set: small, real, and shipped inside registry packages (no download).

Faces: the 100 LFW faces of scikit-image's `lfw_subset` (25x25 grey crops). With faces="all" (--builtin-faces all),
also 747 real faces from photos that two PyPI packages ship (training/data/packaged.py): 374 of the ORL database's
40 people and 373 colour portraits of basketball players, many with dark skin, cut out as the LFW crops are
framed; each face's source is then its group (LFW, ORL, NBA), so the fairness card reports recall per source.
Non-faces: its 100 LFW background patches, plus random crops of natural photographs shipped with
scikit-image and scikit-learn (pictures with people in them are left out).

Every image is brought to 25x25 grey-level resolution first and then up-sampled to 64x64, exactly like
the LFW crops, so that neither sharpness nor colour tells a face from a non-face; colour is put back
for both classes alike by augmentation. Built once, cached as an HDF5 file in the lab layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from training.data.folders import NON_FACE_GROUP
from training.data.h5 import DataError, H5Writer
from training.data.image import IMAGE_SIZE, prepare
from training.data.packaged import PACKAGED_VERSION, PACKAGES, packaged_faces

BUILTIN_VERSION = 2  # of the LFW-only set; faces="all" files have their own name
BUILTIN_FACES = ("lfw", "all")
LFW_SIZE = 25
LFW_FACES = 100  # lfw_subset holds 100 faces first, then 100 background patches
# Random crops of the natural pictures added as non-faces. More crops of the same 22 pictures (every scale and
# place) teach much better what is not a face: 1,400 -> 5,000 raised specificity on 291 real photo crops (an
# ad hoc set, not in the repo) from 0.62 to 0.75 (CNN, mean of 3 seeds; DB-VAE 0.61 -> 0.72, 2 seeds), while recall
# on its 66 crops of 22 faces fell from 0.83 to 0.77 (DB-VAE 0.90 -> 0.87), mostly on loosely framed faces.
# Training takes about 3x as long: an epoch is one pass over the training images.
EXTRA_NON_FACES = 5000
# scikit-image sample pictures without people (astronaut, camera and the GIF show people).
SKIMAGE_PICTURES = ("brick", "cell", "chelsea", "clock", "coffee", "coins", "colorwheel", "grass", "gravel",
                    "horse", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms", "moon",
                    "page", "retina", "rocket", "text", "checkerboard")


def natural_pictures() -> list[np.ndarray]:
    import skimage.data
    from sklearn.datasets import load_sample_images

    pictures = []
    for name in SKIMAGE_PICTURES:
        img = np.asarray(getattr(skimage.data, name)())
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        pictures.append(img)
    pictures.extend(np.asarray(img) for img in load_sample_images().images)  # china.jpg, flower.jpg
    return pictures


def low_res(img: Image.Image) -> np.ndarray:
    """Any crop -> the LFW subset's look: 25x25 grey, then the canonical 64x64 RGB."""
    small = img.convert("L").resize((LFW_SIZE, LFW_SIZE), Image.Resampling.BILINEAR)
    return prepare(small, IMAGE_SIZE)


def packaged_low_res() -> tuple[np.ndarray, list[str]]:
    """The packaged faces (training/data/packaged.py) in the LFW subset's look -> (uint8 [747, 64, 64, 3], group of
    each): the faces --builtin-faces all adds, and those the DB-VAE's decoder tuning reconstructs (--tune-faces)."""
    packaged, sources = packaged_faces()
    return np.stack([low_res(face) for face in packaged]), sources


def random_crops(pictures: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """n square crops of random size and place from the pictures, as uint8 [n, 64, 64, 3]."""
    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    for i in range(n):
        pic = Image.fromarray(pictures[rng.integers(len(pictures))])
        w, h = pic.size
        side = int(rng.integers(min(24, w, h), min(w, h) + 1))  # from small details to the whole picture
        x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        out[i] = low_res(pic.crop((x, y, x + side, y + side)))
    return out


def build_builtin(path: Path, extra_non_faces: int = EXTRA_NON_FACES, seed: int = 0, faces: str = "lfw") -> Path:
    """Faces first (the LFW subset's; with faces="all" then the packaged ones), then the non-faces."""
    import skimage.data

    lfw = np.asarray(skimage.data.lfw_subset())  # [200, 25, 25]: LFW_FACES faces, then as many background patches
    lfw = (np.clip(lfw, 0, 1) * 255).round().astype(np.uint8) if lfw.dtype != np.uint8 else lfw
    lfw_rgb = np.stack([prepare(Image.fromarray(a, "L")) for a in lfw])
    face_images, groups, names = lfw_rgb[:LFW_FACES], None, None
    if faces == "all":
        packaged, sources = packaged_low_res()
        names = ["LFW", *(p.group for p in PACKAGES)]
        face_images = np.concatenate([face_images, packaged])
        groups = np.r_[np.zeros(LFW_FACES, int), [names.index(s) for s in sources]]
    crops = random_crops(natural_pictures(), extra_non_faces, np.random.default_rng(seed))
    non_faces = np.concatenate([lfw_rgb[LFW_FACES:], crops])
    if groups is not None:
        groups = np.r_[groups, np.full(len(non_faces), NON_FACE_GROUP)]
    labels = np.r_[np.ones(len(face_images)), np.zeros(len(non_faces))]
    with H5Writer(path, group_names=names) as w:
        w.append(np.concatenate([face_images, non_faces]), labels, groups)
    return path


def builtin_path(cache_dir: Path, extra_non_faces: int, seed: int, faces: str = "lfw") -> Path:
    if faces not in BUILTIN_FACES:
        raise DataError(f"built-in faces must be {' or '.join(BUILTIN_FACES)}, not {faces!r}")
    name = f"builtin-v{BUILTIN_VERSION}" if faces == "lfw" else f"builtin-{faces}-v{PACKAGED_VERSION}"
    path = cache_dir / f"{name}-{extra_non_faces}-{seed}.h5"
    if not path.is_file():
        build_builtin(path, extra_non_faces, seed, faces)
    return path
