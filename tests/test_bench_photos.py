"""The photo sets of bench/photos: what fetch.sh extracts is what the box files label, and the held-out set
shares no photo with the set the localiser's settings were chosen on."""

from __future__ import annotations

import re

import pytest

from bench.common import PHOTO_SET, heldout_photos
from training.evaluation import read_boxes


def manifest() -> list[tuple[str, str, str, str, str]]:
    """fetch.sh's extraction lines: (subdir, name, archive, member, sha256)."""
    text = (PHOTO_SET / "fetch.sh").read_text()
    body = re.search(r"MANIFEST=\$\(cat <<'EOF'\n(.*?)\nEOF\n", text, re.S).group(1)
    return [tuple(line.split()) for line in body.splitlines() if line.strip()]


def test_fetch_extracts_exactly_the_photos_each_box_file_labels():
    names = {sub: {name for s, name, *_ in manifest() if s == sub} for sub in ("photos", "noface", "heldout")}
    assert names["photos"] == set(read_boxes(PHOTO_SET / "boxes.csv"))
    assert names["heldout"] == set(read_boxes(PHOTO_SET / "boxes_heldout.csv"))
    assert len(names["photos"]) == 20 and len(names["noface"]) == 10 and len(names["heldout"]) == 14


def test_held_out_photos_are_not_in_the_tuned_set():
    rows = manifest()
    tuned = {(arch, member) for sub, _, arch, member, _ in rows if sub != "heldout"}
    held = {(arch, member) for sub, _, arch, member, _ in rows if sub == "heldout"}
    assert not tuned & held
    assert not {sha for sub, *_, sha in rows if sub != "heldout"} & {sha for sub, *_, sha in rows if sub == "heldout"}


def test_held_out_boxes_are_real_boxes():
    boxes = read_boxes(PHOTO_SET / "boxes_heldout.csv")
    counted = [b for per_photo in boxes.values() for b in per_photo if not b[4]]
    assert len(counted) == 19
    assert all(x >= 0 and y >= 0 and w >= 20 and h >= 20 for x, y, w, h, _ in counted)


def test_a_held_out_folder_that_disagrees_with_its_boxes_is_refused(tmp_path):
    (tmp_path / "stray.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="stray.jpg"):
        heldout_photos(tmp_path)
