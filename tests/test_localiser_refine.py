"""The localiser's second stage: each candidate the scan merges is cut out at a grid of shifts and sizes, each
square scored as a 64x64 crop, and the candidate becomes its best crop, with that crop's probability; the
threshold a request asks applies to that probability, the scan's own floor (scan_threshold) stays fixed.

The fixture scan graph scores a window by its mean brightness, logit = 60 (mean - 0.9) (tests/utils/models.py),
so the right score of any crop is known without the service: sigmoid(60 (mean of the crop - 0.9))."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.test_localiser import SQUARES, faces_of, squares_photo
from tests.utils.images import encode
from tests.utils.models import LOCALISER, build_models, write_manifest

# The fixture manifest scans with scan_threshold 0.9: each bright square is one window. With this one nearly every
# window near a square is a candidate, and the candidates are merged boxes that the refining stage must move.
LOW_SCAN = {**LOCALISER, "scan_threshold": 1e-5}
OFF_GRID = (134, 70)  # a square 6 px off the 16 px stride: no scanned window fits it


@pytest.fixture(scope="module")
def low_scan_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = build_models(tmp_path_factory.mktemp("low_scan_models"))
    write_manifest(models, localiser=LOW_SCAN)
    return models


@pytest.fixture(scope="module")
def low_scan(low_scan_models: Path):
    from service.runtime import Runtime
    from service.settings import Settings

    return Runtime.load(Settings(models_dir=low_scan_models, providers=["CPUExecutionProvider"]))


def crop_probability(image: Image.Image, left: float, top: float, side: float) -> float:
    """What the fixture scan graph gives the 64x64 crop of this square, computed here without ONNX."""
    crop = np.asarray(image.resize((64, 64), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side)),
                      dtype=np.float32) / np.float32(255.0)
    return float(1 / (1 + np.exp(-60 * (crop.mean(dtype=np.float64) - 0.9))))


def overlap(a, b) -> float:
    from training.localiser import iou

    return float(iou(np.asarray(a, dtype=float), np.asarray([b], dtype=float))[0])


def test_the_refining_squares_by_hand() -> None:
    from service.localiser import refine_squares as served
    from service.schemas import Localiser
    from training.localiser import LocaliserConfig
    from training.localiser import refine_squares as trained

    boxes = np.array([[100, 100, 50, 40, 0.9], [5, 5, 60, 60, 0.8], [150, 100, 60, 60, 0.7]])
    squares = trained(boxes, LocaliserConfig(**LOCALISER), 200, 150)
    np.testing.assert_array_equal(squares, served(boxes, Localiser(**LOCALISER), 200, 150))
    assert squares.shape == (3, 27, 3)
    # Box 0: its square is 50 px around the centre (125, 120). Grid order: scales (1, 0.9, 1.1), then y shifts,
    # then x shifts, each (0, -0.1, 0.1) of the side: the unmoved square first.
    np.testing.assert_allclose(squares[0, [0, 1, 2, 3, 9, 18]],
                               [[100, 95, 50], [95, 95, 50], [105, 95, 50], [100, 90, 50], [102.5, 97.5, 45],
                                [97.5, 92.5, 55]])
    # Squares that would leave the photo are moved back inside it, not shrunk: box 1 moved left by 6 px would
    # start at -1; box 2 ends past the 200 x 150 photo on both sides.
    np.testing.assert_allclose(squares[1, 1], [0, 5, 60])
    np.testing.assert_allclose(squares[2, 0], [140, 90, 60])


def test_a_candidate_becomes_its_best_crop_with_that_crops_probability(low_scan) -> None:
    from service.localiser import refine, refine_squares

    image = Image.fromarray(squares_photo(corners=[OFF_GRID]))
    cfg = low_scan.manifest.localiser
    candidate = np.array([[128.0, 64.0, 64.0, 64.0, 0.5]])  # the stride's nearest window to the square
    (x, y, w, h, score), = refine(low_scan, "dbvae", image, candidate, cfg)
    expected = [crop_probability(image, *sq) for sq in refine_squares(candidate, cfg, *image.size)[0]]
    assert score == pytest.approx(max(expected), rel=1e-4)  # the best of the 27, as the graph scores it
    assert score == pytest.approx(crop_probability(image, x, y, w), rel=1e-4)  # and it is the crop returned
    assert w == h and score > expected[0]  # moved: better than the candidate's own square
    assert overlap((x, y, w, h), (*OFF_GRID, 64, 64)) > overlap(candidate[0, :4], (*OFF_GRID, 64, 64))


def test_a_square_off_the_stride_is_found_where_it_is(low_scan_models: Path, low_scan) -> None:
    from service.localiser import locate
    from training.localiser import Localiser, LocaliserConfig, merge

    image = Image.fromarray(squares_photo(corners=[OFF_GRID]))
    found = locate(low_scan, "dbvae", image, 0.5, 64, 10).boxes
    assert len(found) == 1
    truth = (*OFF_GRID, 64, 64)
    cfg = LocaliserConfig(**LOW_SCAN)
    scan = Localiser(low_scan_models / "dbvae_scan.onnx", cfg)
    candidate = merge(scan.windows(image, cfg.scan_threshold, 64), cfg.nms_iou, 10, cfg.min_neighbours)
    # The fixture scores any crop inside the square as all bright: the best is a 0.9-sized one within it.
    assert overlap(found[0, :4], truth) >= 0.8 > overlap(candidate[0, :4], truth)


def test_min_neighbours_counts_the_windows_of_the_scan(client: TestClient, low_scan) -> None:
    from service.localiser import locate

    photo = {"image": ("p.png", encode(squares_photo(), "PNG"))}
    # At scan_threshold 0.9 each square is one window: with two needed, neither is a candidate ...
    alone = client.post("/v1/detect", params={"min_face_size": 64, "min_neighbours": 2}, files=photo)
    assert faces_of(alone) == []
    # ... at 1e-5 the windows 16 px off each square agree with it, and both squares are found again.
    found = locate(low_scan, "dbvae", Image.fromarray(squares_photo()), 0.9, 64, 10, min_neighbours=2).boxes
    assert len(found) == 2
    for x, y in SQUARES:
        assert max(overlap(box[:4], (x, y, 64, 64)) for box in found) >= 0.8


def test_a_higher_threshold_keeps_exactly_the_faces_scoring_above_it(low_scan) -> None:
    """The web page asks once at its slider's lowest threshold and filters in the browser: that is exact only
    if the candidates do not depend on the threshold asked."""
    from service.localiser import locate

    scene = squares_photo(corners=[*SQUARES, (230, 380), (480, 48)])
    scene[300:364, 500:564] = 235  # a dimmer square: its crop scores sigmoid(60 (0.92 - 0.9)) = 0.77
    image = Image.fromarray(scene)
    low = locate(low_scan, "dbvae", image, 0.01, 64, 100).boxes
    assert len(low) >= 5 and (low[:, 4] < 0.9).any()
    for threshold in (0.5, 0.9, 0.99):
        high = locate(low_scan, "dbvae", image, threshold, 64, 100).boxes
        np.testing.assert_array_equal(high, low[low[:, 4] >= threshold])


def test_with_no_face_passing_the_face_probability_is_the_best_crop(client: TestClient) -> None:
    photo = {"image": ("p.png", encode(squares_photo(), "PNG"))}
    result = client.post("/v1/detect", params={"min_face_size": 64, "threshold": 1.0}, files=photo).json()["results"][0]
    assert result["faces"] == [] and result["is_face"] is False
    assert result["face_probability"] == pytest.approx(1 / (1 + np.exp(-6.0)), abs=1e-4)  # a square's own crop


@pytest.mark.parametrize("localiser", [LOCALISER, LOW_SCAN], ids=["scan 0.9", "scan 1e-5"])
def test_training_and_service_localisers_find_the_same_boxes(tmp_path: Path, localiser: dict) -> None:
    """The two copies of the algorithm (the halves share no code) on the same scan graph and photos."""
    from service.localiser import locate
    from service.runtime import Runtime
    from service.settings import Settings
    from training.localiser import Localiser, LocaliserConfig

    models = build_models(tmp_path)
    write_manifest(models, localiser=localiser)
    runtime = Runtime.load(Settings(models_dir=models, providers=["CPUExecutionProvider"]))
    manifest = json.loads((models / "manifest.json").read_text())
    for corners, min_face in ((SQUARES, 64), ([(100, 50), (300, 310), (500, 100)], 48), ([OFF_GRID], 64), ([], 40)):
        image = Image.fromarray(squares_photo(corners=corners))
        for threshold, neighbours in ((0.9, 1), (1e-5, 1), (1e-5, 2)):
            cfg = LocaliserConfig(**{**manifest["localiser"], "min_face_size": min_face, "min_neighbours": neighbours})
            trained = Localiser(models / "dbvae_scan.onnx", cfg).locate(image, threshold=threshold)
            served = locate(runtime, "dbvae", image, threshold, min_face, cfg.max_faces, None, neighbours).boxes
            np.testing.assert_allclose(trained, served, atol=1e-9)
