"""Data sources on small files in the exact on-disk formats, the split, and augmentation."""

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from training.augment import augment
from training.config import TrainConfig
from training.data.builtin import build_builtin
from training.data.folders import convert_folders
from training.data.h5 import DataError, H5Source
from training.data.image import load_image
from training.data.sources import open_source, stratified_split
from tests.utils.training_data import lfw_faces, photo_patches, write_folder, write_lab_h5


@pytest.fixture(scope="module")
def lab_file(tmp_path_factory):
    faces, others = lfw_faces(6), photo_patches(10)
    rgb = np.concatenate([faces, others])
    labels = np.r_[np.ones(6), np.zeros(10)]
    return write_lab_h5(tmp_path_factory.mktemp("h5") / "train_face.h5", rgb, labels), rgb, labels


def test_h5_reads_lazily_and_flips_bgr_to_rgb(lab_file):
    path, rgb, labels = lab_file
    src = H5Source(path)
    assert len(src) == 16 and src.labels.tolist() == labels.tolist()
    idx = np.array([12, 3, 3, 0])  # unsorted, repeated
    got = src.read(idx)
    assert got.dtype == np.uint8 and got.shape == (4, 64, 64, 3)
    np.testing.assert_array_equal(got, rgb[idx])  # RGB, although the file stores BGR
    with h5py.File(path) as f:
        np.testing.assert_array_equal(f["images"][12][..., 0], rgb[12][..., 2])


def test_h5_source_survives_pickling_for_worker_processes(lab_file):
    import pickle

    src = H5Source(lab_file[0])
    src.read(np.array([0]))
    clone = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(clone.read(np.array([5])), lab_file[1][[5]])


@pytest.mark.parametrize("overrides, message", [
    ({"images_key": "pictures"}, "no dataset 'images'"),
    ({"labels_key": "y"}, "no dataset 'labels'"),
])
def test_h5_wrong_dataset_names(tmp_path, overrides, message):
    path = write_lab_h5(tmp_path / "x.h5", photo_patches(4), np.array([1, 0, 1, 0]), **overrides)
    with pytest.raises(DataError, match=message):
        H5Source(path)


def test_h5_wrong_shapes_and_values(tmp_path):
    with h5py.File(tmp_path / "shape.h5", "w") as f:
        f["images"] = np.zeros((4, 32, 32, 3), np.uint8)
        f["labels"] = np.zeros((4, 1))
    with pytest.raises(DataError, match=r"expected uint8\[N, 64, 64, 3\]"):
        H5Source(tmp_path / "shape.h5")
    path = write_lab_h5(tmp_path / "one.h5", photo_patches(3), np.zeros(3))
    with pytest.raises(DataError, match="needs both faces and non-faces"):
        H5Source(path)
    path = write_lab_h5(tmp_path / "lab.h5", photo_patches(3), np.array([0, 2, 1]))
    with pytest.raises(DataError, match="labels must be 0"):
        H5Source(path)


def test_h5_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        H5Source(tmp_path / "nope.h5")
    (tmp_path / "bad.h5").write_bytes(b"this is not hdf5" * 10)
    with pytest.raises(DataError, match="cannot read .* as HDF5"):
        H5Source(tmp_path / "bad.h5")


def test_folders_convert_skip_unreadable_and_keep_groups(tmp_path):
    faces = lfw_faces(8)
    write_folder(tmp_path / "faces" / "DF", faces[:3], "JPEG")
    write_folder(tmp_path / "faces" / "LM", faces[3:8], "PNG")
    write_folder(tmp_path / "neg", photo_patches(6), "WEBP")
    (tmp_path / "neg" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (tmp_path / "neg" / "notes.txt").write_text("ignored: not an image extension")
    path, skipped = convert_folders(tmp_path / "faces", tmp_path / "neg", tmp_path / "cache")
    assert skipped == 1
    src = H5Source(path)
    assert int(src.labels.sum()) == 8 and len(src) == 14
    assert src.group_names == ["DF", "LM"]
    assert src.groups[src.labels == 1].tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    # PNG is lossless: the stored face equals the canonical decode of the file.
    np.testing.assert_array_equal(src.read(np.array([3]))[0], faces[3])
    again, skipped_again = convert_folders(tmp_path / "faces", tmp_path / "neg", tmp_path / "cache")
    assert again == path and skipped_again == 1  # cached, not converted twice


def test_folders_empty_or_missing(tmp_path):
    (tmp_path / "empty").mkdir()
    write_folder(tmp_path / "neg", photo_patches(2))
    with pytest.raises(DataError, match="no images"):
        convert_folders(tmp_path / "empty", tmp_path / "neg", tmp_path / "cache")
    with pytest.raises(DataError, match="not a directory"):
        convert_folders(tmp_path / "missing", tmp_path / "neg", tmp_path / "cache")


def test_canonical_decode_crops_centre_and_handles_modes(tmp_path):
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, 20:60] = 200  # the centre square is all 200, the sides are black
    Image.fromarray(wide).save(tmp_path / "wide.png")
    out = load_image(tmp_path / "wide.png")
    assert out.shape == (64, 64, 3) and out.min() == 200
    grey16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    g = load_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(g[..., 0], (grey16 >> 8).astype(np.uint8))  # scaled, not clipped
    rgba = np.zeros((64, 64, 4), np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    assert load_image(tmp_path / "clear.png").min() == 255  # transparent -> white
    with pytest.raises(ValueError, match="cannot decode"):
        load_image(b"not an image")


def test_builtin_is_real_lfw_plus_photo_crops(tmp_path):
    src = H5Source(build_builtin(tmp_path / "b.h5", extra_non_faces=50, seed=1))
    assert len(src) == 250 and int(src.labels.sum()) == 100 and src.groups is None
    faces = src.read(np.flatnonzero(src.labels == 1)[:5])
    assert np.all(faces[..., 0] == faces[..., 1])  # grey, as the LFW subset
    first = lfw_faces(1)[0]
    assert np.abs(faces[0].astype(int) - first.astype(int)).mean() < 2.0  # the first LFW face
    non = src.read(np.flatnonzero(src.labels == 0))
    assert non.std() > 10  # real image content, not blanks


def test_builtin_all_adds_the_packaged_faces_as_groups(tmp_path):
    lfw_only = H5Source(build_builtin(tmp_path / "lfw.h5", extra_non_faces=50, seed=1))
    src = H5Source(build_builtin(tmp_path / "all.h5", extra_non_faces=50, seed=1, faces="all"))
    faces_idx = np.flatnonzero(src.labels == 1)
    assert len(src) == 847 + 150 and faces_idx.tolist() == list(range(847))
    assert src.group_names == ["LFW", "ORL", "NBA"]
    assert np.bincount(src.groups[faces_idx]).tolist() == [100, 374, 373]
    assert set(src.groups[src.labels == 0].tolist()) == {-1}
    # The same LFW faces first and the same non-faces last as the LFW-only set.
    assert np.array_equal(src.read(np.arange(100)), lfw_only.read(np.arange(100)))
    assert np.array_equal(src.read(np.arange(847, 997)), lfw_only.read(np.arange(100, 250)))
    packaged = src.read(faces_idx[100::50])
    assert np.all(packaged[..., 0] == packaged[..., 2])  # grey like the LFW subset, whatever the photo's colour
    assert packaged.std(axis=(1, 2, 3)).min() > 10  # real faces, no blank or flat squares


def test_open_source_builtin_is_cached_per_choice_of_faces(tmp_path):
    every = open_source("builtin", cache_dir=str(tmp_path), builtin_non_faces=20, builtin_faces="all")
    assert every.path.name == "builtin-all-v1-20-0.h5" and len(every) == 847 + 120
    with pytest.raises(DataError, match="built-in faces must be lfw or all, not 'some'"):
        open_source("builtin", cache_dir=str(tmp_path), builtin_faces="some")


def test_open_source_builtin_is_cached(tmp_path):
    a = open_source("builtin", cache_dir=str(tmp_path), builtin_non_faces=20)
    b = open_source("builtin", cache_dir=str(tmp_path), builtin_non_faces=20)
    assert a.path == b.path and a.path.is_file() and len(a) == 220


def test_stratified_split_is_seeded_disjoint_and_proportional():
    labels = np.r_[np.ones(100), np.zeros(900)].astype(int)
    tr, va = stratified_split(labels, 0.2, seed=3)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 1000
    assert labels[va].sum() == 20 and (labels[va] == 0).sum() == 180
    tr2, va2 = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(va, va2)
    assert not np.array_equal(va, stratified_split(labels, 0.2, seed=4)[1])
    with pytest.raises(DataError, match="too few"):
        stratified_split(np.array([1, 0, 0, 0]), 0.2, 0)


def test_augmentation_is_seeded_in_range_and_off_when_zero():
    x = torch.from_numpy(lfw_faces(4).transpose(0, 3, 1, 2).copy()).float() / 255
    cfg = TrainConfig()
    a = augment(x, cfg, torch.Generator().manual_seed(1))
    b = augment(x, cfg, torch.Generator().manual_seed(1))
    c = augment(x, cfg, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    still = TrainConfig(flip=0, rotate=0, shift=0, scale_min=1, scale_max=1, brightness=0, contrast=0,
                        colour=0, grey=0, noise=0)
    assert torch.allclose(augment(x, still, torch.Generator().manual_seed(1)), x, atol=1e-5)
    flipped = TrainConfig(flip=1, rotate=0, shift=0, scale_min=1, scale_max=1, brightness=0, contrast=0,
                          colour=0, grey=0, noise=0)
    assert torch.allclose(augment(x, flipped, torch.Generator()), x.flip(-1), atol=1e-5)


def test_zoom_out_places_the_image_in_a_real_background():
    faces = torch.from_numpy(lfw_faces(2).transpose(0, 3, 1, 2).copy()).float() / 255
    scene = torch.from_numpy(photo_patches(1).transpose(0, 3, 1, 2).copy()).float() / 255
    half = TrainConfig(flip=0, rotate=0, shift=0, scale_min=0.5, scale_max=0.5, brightness=0, contrast=0,
                       colour=0, grey=0, noise=0)
    out = augment(faces, half, torch.Generator().manual_seed(0), backgrounds=scene)
    # The face shrinks to the central 32x32; the frame around it is the scene, untouched.
    torch.testing.assert_close(out[:, :, :8], scene.expand(2, -1, -1, -1)[:, :, :8])
    torch.testing.assert_close(out[:, :, :, -8:], scene.expand(2, -1, -1, -1)[:, :, :, -8:])
    small = torch.nn.functional.avg_pool2d(faces, 2)
    assert float((out[:, :, 18:46, 18:46] - small[:, :, 2:30, 2:30]).abs().mean()) < 0.03


def test_occlusion_covers_part_of_the_image_with_a_real_scene():
    faces = torch.from_numpy(lfw_faces(8).transpose(0, 3, 1, 2).copy()).float() / 255
    scene = torch.from_numpy(photo_patches(1).transpose(0, 3, 1, 2).copy()).float() / 255
    cfg = TrainConfig(flip=0, rotate=0, shift=0, scale_min=1, scale_max=1, brightness=0, contrast=0, colour=0,
                      grey=0, noise=0, occlude=1.0)
    out = augment(faces, cfg, torch.Generator().manual_seed(3), backgrounds=scene)
    from_scene = (out - scene).abs().amax(1) < 1e-6  # [N, H, W]: pixels taken from the scene
    untouched = (out - faces).abs().amax(1) < 1e-6
    assert torch.all(from_scene | untouched)
    covered = from_scene.float().mean(dim=(1, 2))
    assert torch.all((covered > 0.02) & (covered < 0.3))  # one 5-25% rectangle each (edges rounded)
    none = augment(faces, TrainConfig(**{**cfg.to_dict(), "occlude": 0.0}), torch.Generator().manual_seed(3),
                   backgrounds=scene)
    torch.testing.assert_close(none, faces, atol=1e-5, rtol=0)
