"""The MIT 6.S191 lab layout, read lazily: `images` uint8 [N, 64, 64, 3] in BGR, `labels` [N, 1], 1 = face.

Files of tens of GB are never loaded whole: only labels (N bytes) are read up front; images are read by
index, batch by batch. The h5py handle is opened on first use in each process, so a source can be handed
to DataLoader worker processes (an h5py handle cannot cross a fork safely).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from training.data.image import IMAGE_SIZE


class DataError(Exception):
    """A data source that cannot be used; the message is shown to the user as is."""


class H5Source:
    def __init__(self, path: str | Path, images_key: str = "images", labels_key: str = "labels",
                 name: str = "h5", faces_only: bool = False):
        """faces_only: a set of faces alone is accepted (an evaluation of recall, e.g. the fairness card)."""
        self.path, self.images_key, self.labels_key, self.name = Path(path), images_key, labels_key, name
        self.faces_only = faces_only
        if not self.path.is_file():
            raise DataError(f"h5 file not found: {self.path}")
        try:
            with h5py.File(self.path, "r") as f:
                self.labels, self.groups, self.group_names = self._validate(f)
        except OSError as exc:
            raise DataError(f"cannot read {self.path} as HDF5: {exc}") from exc
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def _validate(self, f: h5py.File):
        for key in (self.images_key, self.labels_key):
            if key not in f:
                raise DataError(f"{self.path}: no dataset {key!r} (found: {', '.join(f.keys()) or 'none'})")
        images, labels = f[self.images_key], f[self.labels_key]
        want = (IMAGE_SIZE, IMAGE_SIZE, 3)
        if images.ndim != 4 or images.shape[1:] != want or images.dtype != np.uint8:
            raise DataError(f"{self.path}: {self.images_key!r} is {images.dtype}{list(images.shape)}, "
                            f"expected uint8[N, {IMAGE_SIZE}, {IMAGE_SIZE}, 3]")
        if labels.shape[0] != images.shape[0] or labels.ndim not in (1, 2) or labels.size != labels.shape[0]:
            raise DataError(f"{self.path}: {self.labels_key!r} has shape {list(labels.shape)}, "
                            f"expected [{images.shape[0]}, 1] or [{images.shape[0]}]")
        y = np.asarray(labels[...]).reshape(-1)
        if not np.isin(y, (0, 1)).all():
            raise DataError(f"{self.path}: labels must be 0 (not face) or 1 (face)")
        if images.shape[0] == 0 or (y.min() == y.max() and not (self.faces_only and y.min() == 1)):
            raise DataError(f"{self.path}: needs both faces and non-faces (found {int(y.sum())} faces "
                            f"of {len(y)} images)")
        groups = np.asarray(f["groups"][...]).reshape(-1).astype(np.int64) if "groups" in f else None
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs.get("group_names", [])]
        return y.astype(np.int64), groups, names

    def __len__(self) -> int:
        return len(self.labels)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, None
        return state

    def _images(self) -> h5py.Dataset:
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file[self.images_key]

    def read(self, indices: np.ndarray) -> np.ndarray:
        """uint8 RGB [B, 64, 64, 3] for `indices` (any order, repeats allowed).

        One read per image: h5py's fancy indexing (ds[list]) builds a point selection that costs ~25 ms per
        batch of 32 on a chunked file, while 32 single-image reads take ~0.5 ms (bench/training.py)."""
        images = self._images()
        out = np.empty((len(indices), *images.shape[1:]), dtype=np.uint8)
        for j, i in enumerate(np.asarray(indices, dtype=np.int64)):
            out[j] = images[i]
        return out[..., ::-1].copy()  # BGR -> RGB

    def read_range(self, start: int, stop: int) -> np.ndarray:
        """uint8 RGB [stop - start, 64, 64, 3]: one contiguous slice, one read (the way to stream a whole file)."""
        return self._images()[start:stop][..., ::-1].copy()  # BGR -> RGB

    def describe(self) -> dict:
        return {"source": self.name, "path": str(self.path), "images": len(self),
                "faces": int(self.labels.sum()), "non_faces": int(len(self) - self.labels.sum())}


class H5Writer:
    """Append images to a new file in the lab layout (RGB in, BGR on disk), in chunks, atomically:
    the data goes to `<path>.tmp` and is renamed only when the writer closes without error."""

    def __init__(self, path: str | Path, group_names: list[str] | None = None):
        self.path = Path(path)
        self.tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.group_names = group_names
        self.count = 0

    def __enter__(self) -> "H5Writer":
        self.f = h5py.File(self.tmp, "w")
        s = IMAGE_SIZE
        # One image per chunk: training reads images at random, and a read costs a whole chunk.
        self.images = self.f.create_dataset("images", shape=(0, s, s, 3), maxshape=(None, s, s, 3),
                                            dtype=np.uint8, chunks=(1, s, s, 3))
        self.labels = self.f.create_dataset("labels", shape=(0, 1), maxshape=(None, 1), dtype=np.uint8)
        if self.group_names is not None:
            self.groups = self.f.create_dataset("groups", shape=(0,), maxshape=(None,), dtype=np.int16)
            self.f.attrs["group_names"] = self.group_names
        return self

    def append(self, images_rgb: np.ndarray, labels: np.ndarray, groups: np.ndarray | None = None) -> None:
        n, end = len(images_rgb), self.count + len(images_rgb)
        if n == 0:
            return
        self.images.resize(end, axis=0)
        self.images[self.count:end] = images_rgb[..., ::-1]
        self.labels.resize(end, axis=0)
        self.labels[self.count:end] = np.asarray(labels, dtype=np.uint8).reshape(-1, 1)
        if self.group_names is not None:
            self.groups.resize(end, axis=0)
            self.groups[self.count:end] = groups
        self.count = end

    def __exit__(self, exc_type, *_):
        self.f.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
