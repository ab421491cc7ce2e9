"""Finding faces in photos: the pyramid scan, non-maximum suppression, box coordinates (EXIF orientation
included), the crop case, /reconstruct and /morph on the faces found, bad parameters, and the photo evaluation.

The fixture scan graphs (tests/utils/models.py) score a 64x64 window by its mean brightness, so the right
answer is known exactly: a bright 64x64 square on a dark photo is one face at its own place. The refining stage,
and the training and service copies finding the same boxes: tests/test_localiser_refine.py."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sklearn.datasets import load_sample_image

from tests.utils.images import encode, with_orientation

SQUARES = [(128, 64), (352, 256)]  # top-left corners of the 64x64 "faces", multiples of the 16 px stride


def squares_photo(width: int = 640, height: int = 480, corners=SQUARES) -> np.ndarray:
    """A dark real photo (scikit-learn's china.jpg, dimmed to a tenth) with bright 64x64 squares pasted in."""
    scene = np.asarray(Image.fromarray(load_sample_image("china.jpg")).resize((width, height))) // 10
    for x, y in corners:
        scene[y:y + 64, x:x + 64] = 255
    return scene


def faces_of(response) -> list[tuple[int, int, int, int]]:
    assert response.status_code == 200, response.text
    return [tuple(f["box"][k] for k in ("x", "y", "width", "height")) for f in response.json()["results"][0]["faces"]]


def test_each_square_is_one_face_at_its_place(client: TestClient) -> None:
    response = client.post("/v1/detect", params={"min_face_size": 64},
                           files={"image": ("p.png", encode(squares_photo(), "PNG"))})
    assert sorted(faces_of(response)) == [(x, y, 64, 64) for x, y in SQUARES]
    result = response.json()["results"][0]
    assert result["is_face"] is True and result["threshold"] == 0.9
    assert result["face_probability"] == pytest.approx(1 / (1 + np.exp(-6.0)), abs=1e-4)
    scores = [f["score"] for f in result["faces"]]
    assert scores == sorted(scores, reverse=True)


def test_boxes_are_in_the_pixels_of_the_photo_after_exif_rotation(client: TestClient) -> None:
    upright = squares_photo()  # what a viewer shows: 640 x 480
    stored = np.rot90(upright, k=1)  # the camera stored it turned; EXIF orientation 6 turns it back
    blob = with_orientation(np.ascontiguousarray(stored), "PNG", 6)
    with Image.open(io.BytesIO(blob)) as im:
        assert im.size == (480, 640)
    response = client.post("/v1/detect", params={"min_face_size": 64}, files={"image": ("r.png", blob)})
    assert sorted(faces_of(response)) == [(x, y, 64, 64) for x, y in SQUARES]


def test_a_larger_min_face_size_starts_the_pyramid_smaller_and_misses_small_faces(client: TestClient) -> None:
    response = client.post("/v1/detect", params={"min_face_size": 128},
                           files={"image": ("p.png", encode(squares_photo(), "PNG"))})
    assert faces_of(response) == []
    assert response.json()["results"][0]["is_face"] is False


def test_nms_merges_the_overlapping_windows_into_one_face(client: TestClient) -> None:
    from service.localiser import merge

    # At a low threshold the windows 16 px off each square (mean 0.75, score ~1e-4) are found too ...
    response = client.post("/v1/detect", params={"min_face_size": 64, "threshold": 1e-5},
                           files={"image": ("p.png", encode(squares_photo(), "PNG"))})
    assert sorted(faces_of(response)) == [(x, y, 64, 64) for x, y in SQUARES]  # ... and merged into the square
    # Hand-computed: two boxes overlapping by IoU 0.6 and one apart -> two faces; the first is the
    # score-weighted mean of its group and keeps the best score.
    boxes = np.array([[0, 0, 64, 64, 0.9], [16, 0, 64, 64, 0.1], [200, 0, 64, 64, 0.5]], dtype=float)
    kept = merge(boxes, nms_iou=0.3, max_faces=10)
    np.testing.assert_allclose(kept, [[1.6, 0, 64, 64, 0.9], [200, 0, 64, 64, 0.5]])
    assert len(merge(boxes, nms_iou=0.7, max_faces=10)) == 3  # IoU 0.6 is kept apart at 0.7
    assert len(merge(boxes, nms_iou=0.3, max_faces=1)) == 1
    # A group of fewer than min_neighbours boxes is dropped: the lone box goes, the pair stays.
    np.testing.assert_allclose(merge(boxes, nms_iou=0.3, max_faces=10, min_neighbours=2), [[1.6, 0, 64, 64, 0.9]])
    assert len(merge(boxes, nms_iou=0.3, max_faces=10, min_neighbours=3)) == 0


@pytest.mark.parametrize("side", ["training", "service"])
def test_a_face_mostly_inside_a_better_one_is_dropped(side: str) -> None:
    from service.localiser import drop_nested as served
    from training.localiser import drop_nested as trained

    drop_nested = trained if side == "training" else served
    # A 100 px face (0.99); a worse 40 px box inside it, covered all over (though only 1600 / 10000 = 0.16 of the
    # face's area); a worse 40 px box half inside it (800 / 1600 = 0.5), and one elsewhere.
    boxes = np.array([[0, 0, 100, 100, 0.99], [30, 30, 40, 40, 0.5], [80, 0, 40, 40, 0.9],
                      [300, 0, 40, 40, 0.8]], dtype=float)
    np.testing.assert_array_equal(drop_nested(boxes, 0.6), boxes[[0, 2, 3]])
    np.testing.assert_array_equal(drop_nested(boxes, 0.4), boxes[[0, 3]])  # 0.5 > 0.4: the half-inside one too
    np.testing.assert_array_equal(drop_nested(boxes, 1.0), boxes[[0, 2, 3, 1]])  # 1: off, best first
    # The inner box better than the face around it: the face goes, and the half-inside box, apart from the inner
    # one, stays.
    boxes[1, 4] = 0.995
    np.testing.assert_array_equal(drop_nested(boxes, 0.6), boxes[[1, 2, 3]])
    assert drop_nested(np.zeros((0, 5)), 0.6).shape == (0, 5)


def test_a_manifest_from_before_nested_overlap_drops_nothing() -> None:
    from service.schemas import Localiser
    from tests.utils.models import LOCALISER

    old = {k: v for k, v in LOCALISER.items() if k != "nested_overlap"}
    assert Localiser(**old).nested_overlap == 1.0
    assert Localiser(**LOCALISER).nested_overlap == 0.6


def test_max_faces_and_a_photo_without_faces(client: TestClient) -> None:
    photo = encode(squares_photo(), "PNG")
    response = client.post("/v1/detect", params={"min_face_size": 64, "max_faces": 1}, files={"image": ("p.png", photo)})
    assert len(faces_of(response)) == 1
    dark = encode(squares_photo(corners=[]), "JPEG", quality=90)
    response = client.post("/v1/detect", params={"min_face_size": 64}, files={"image": ("d.jpg", dark)})
    assert faces_of(response) == [] and response.json()["results"][0]["is_face"] is False


def test_a_crop_is_one_face_that_fills_it_or_none(client: TestClient, reference) -> None:
    from training.data.image import load_image, to_model_input

    crop = encode(squares_photo(96, 80), "PNG")  # no side over crop_max_side (128): classified whole
    p = float(reference.probability("dbvae", to_model_input(load_image(crop)[None]))[0])
    for threshold, expected in ((0.0, [(8, 0, 80, 80)]), (1.0, [])):
        response = client.post("/v1/detect", params={"threshold": threshold}, files={"image": ("c.png", crop)})
        assert faces_of(response) == expected
        assert response.json()["results"][0]["face_probability"] == pytest.approx(p, abs=1e-6)


def test_boxes_false_keeps_the_centre_crop_answer(client: TestClient, reference) -> None:
    from training.data.image import load_image, to_model_input

    photo = encode(squares_photo(), "PNG")
    result = client.post("/v1/detect", params={"boxes": "false"}, files={"image": ("p.png", photo)}).json()["results"][0]
    assert result["faces"] is None and result["threshold"] == 0.5
    expected = reference.probability("dbvae", to_model_input(load_image(photo)[None]))[0]
    assert result["face_probability"] == pytest.approx(float(expected), abs=1e-6)


def test_a_batch_mixes_photos_and_crops(client: TestClient) -> None:
    files = [("image", ("p.png", encode(squares_photo(), "PNG"))),
             ("image", ("c.png", encode(squares_photo(64, 64, corners=[(0, 0)]), "PNG")))]
    results = client.post("/v1/detect", params={"min_face_size": 64, "threshold": 0.0}, files=files).json()["results"]
    assert [r["filename"] for r in results] == ["p.png", "c.png"]
    assert results[1]["faces"][0]["box"] == {"x": 0, "y": 0, "width": 64, "height": 64}
    assert len(results[0]["faces"]) >= 2


def test_reconstruct_and_morph_use_the_faces_found(client: TestClient) -> None:
    one = encode(squares_photo(corners=[(128, 64)]), "PNG")
    other = encode(squares_photo(corners=[(400, 288)]), "PNG")
    response = client.post("/v1/reconstruct", files={"image": ("a.png", one)})
    assert response.status_code == 200
    assert (response.headers["X-Face-Box"], response.headers["X-Face-Source"]) == ("128,64,64,64", "found")
    asked = client.post("/v1/reconstruct", params={"box": "128,64,64,64"}, files={"image": ("a.png", one)})
    assert (asked.headers["X-Face-Box"], asked.headers["X-Face-Source"]) == ("128,64,64,64", "request")
    body = client.post("/v1/morph", params={"format": "json", "steps": 3, "box_a": "128,64,64,64",
                                            "box_b": "400,288,64,64"},
                       files={"a": ("a.png", one), "b": ("b.png", other)}).json()
    assert body["box_a"] == {"box": {"x": 128, "y": 64, "width": 64, "height": 64}, "source": "request"}
    assert body["box_b"]["box"] == {"x": 400, "y": 288, "width": 64, "height": 64}
    body = client.post("/v1/morph", params={"format": "json", "steps": 2},
                       files={"a": ("a.png", one), "b": ("b.png", other)}).json()
    assert body["box_a"] == {"box": {"x": 128, "y": 64, "width": 64, "height": 64}, "source": "found"}
    assert body["box_b"] == {"box": {"x": 400, "y": 288, "width": 64, "height": 64}, "source": "found"}


@pytest.mark.parametrize("params", [{"min_face_size": 0}, {"min_face_size": "big"}, {"max_faces": 0},
                                    {"max_faces": 5000}, {"threshold": 1.5}, {"threshold": -0.1},
                                    {"boxes": "maybe"}, {"min_neighbours": 0}, {"min_neighbours": 101}])
def test_bad_detect_parameters_get_a_422_problem(client: TestClient, params: dict) -> None:
    response = client.post("/v1/detect", params=params, files={"image": ("p.png", encode(squares_photo(), "PNG"))})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert next(iter(params)) in response.json()["detail"]


@pytest.mark.parametrize("box", ["1,2,3", "a,b,c,d", "0,0,0,10", "600,0,64,64"])
def test_bad_boxes_get_a_422_problem(client: TestClient, box: str) -> None:
    response = client.post("/v1/reconstruct", params={"box": box},
                           files={"image": ("p.png", encode(squares_photo(), "PNG"))})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_photo_evaluation_scores_the_known_answer(models_dir: Path, tmp_path: Path) -> None:
    from training.evaluate import main as evaluate_main
    from training.evaluation import average_precision

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(squares_photo()).save(photos / "two.png")
    Image.fromarray(squares_photo(corners=[])).save(photos / "none.png")
    csv = tmp_path / "boxes.csv"
    # One true face per square, plus one face the fixture cannot see (a miss) and one 'difficult' one.
    csv.write_text("file,x,y,width,height,difficult\n" + "".join(f"two.png,{x},{y},64,64,0\n" for x, y in SQUARES)
                   + "two.png,500,380,60,60,0\nnone.png,10,10,30,30,1\n")
    out = tmp_path / "eval.json"
    assert evaluate_main(["--models-dir", str(models_dir), "--photos", str(photos), "--boxes", str(csv),
                          "--out", str(out), "--sheet", str(tmp_path / "sheet")]) == 0
    result = json.loads(out.read_text())
    assert result["data"] == {**result["data"], "photos": 2, "faces": 3, "difficult": 1}
    for kind in ("cnn", "dbvae"):
        m = result["models"][kind]
        assert (m["true_positives"], m["faces"]) == (2, 3)
        assert m["recall"] == pytest.approx(2 / 3) and m["precision"] == pytest.approx(2 / (2 + m["false_alarms"]))
        assert (tmp_path / f"sheet_{kind}.png").is_file()
    # Hand-computed AP: scores 0.9 (hit), 0.8 (false alarm), 0.7 (hit) for 2 faces -> 1 * 0.5 + 2/3 * 0.5.
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1]), 2) == pytest.approx(0.5 + 1 / 3)
    assert average_precision(np.array([0.9, 0.8]), np.array([-1, 1]), 1) == pytest.approx(1.0)  # difficult ignored


def test_mining_keeps_what_the_scanner_calls_a_face(models_dir: Path) -> None:
    from training.localiser import LocaliserConfig
    from training.mining import false_alarms

    cfg = LocaliserConfig(min_face_size=64)
    crops = false_alarms(models_dir / "dbvae_scan.onnx", [squares_photo(), squares_photo(corners=[])], cfg,
                         floor=0.5, per_picture=10, builtin_look=False)
    assert crops.shape == (2, 64, 64, 3) and crops.dtype == np.uint8
    assert crops.min() == 255  # exactly the two bright squares: the fixture's only "faces"


def test_the_scan_network_is_the_classifier_on_one_window_and_a_map_on_more() -> None:
    import torch

    from training.localiser import ScanNet
    from training.model import DBVAE, FaceCNN, ModelConfig

    torch.manual_seed(0)
    for model in (FaceCNN(ModelConfig(front_end="grey-lowpass")), DBVAE(ModelConfig(latent_dim=8))):
        model.eval()
        scan = ScanNet(model).eval()
        x = torch.rand(3, 3, 64, 64)
        with torch.no_grad():
            expected = model(x) if isinstance(model, FaceCNN) else model.encode(x)[0]
            torch.testing.assert_close(scan(x)[:, 0, 0], expected, rtol=1e-4, atol=1e-5)
            assert scan(torch.rand(2, 3, 128, 96)).shape == (2, 5, 3)  # (128/16 - 3) x (96/16 - 3) windows


def test_a_huge_photo_is_scanned_within_the_pixel_budget() -> None:
    from service.localiser import pyramid
    from service.schemas import Localiser
    from tests.utils.models import LOCALISER

    cfg = Localiser(**LOCALISER)
    free = pyramid(7000, 7000, cfg, 40)
    capped = pyramid(7000, 7000, cfg, 40, max_pixels=8_000_000)
    assert free[0] == pytest.approx(64 / 40)  # 11,200 x 11,200 px at the first level: 125 M pixels
    assert 7000 * 7000 * capped[0] ** 2 == pytest.approx(8_000_000)
    assert all(7000 * 7000 * s ** 2 <= 8_000_000 * (1 + 1e-9) for s in capped)
    assert pyramid(1920, 1280, cfg, 40, max_pixels=8_000_000)[0] == pytest.approx(64 / 40)  # not capped


def test_the_scan_budget_setting_bounds_what_detect_scans(make_settings) -> None:
    from service.main import create_app

    photo = encode(squares_photo(), "PNG")  # 640 x 480: at min_face_size 64, level 0 is 307,200 pixels
    with TestClient(create_app(make_settings(max_scan_pixels=100_000))) as small:
        # Capped at 100,000 pixels, level 0 is 0.57x: the 64 px squares are 37 px there, no window fits them.
        assert faces_of(small.post("/v1/detect", files={"image": ("p.png", photo)})) == []
    assert make_settings().max_scan_pixels == 8_000_000


@pytest.mark.parametrize("model", ["dbvae", "cnn"])
@pytest.mark.parametrize("level_scan", [True, False])
def test_a_level_scanned_in_bands_scores_exactly_as_in_one_run(model: str, level_scan: bool) -> None:
    """The committed scan graphs (their convolutions see past a window's edge) on a real 1920x1280 photo's first
    level, through the scan the service uses (the level scan at half the level's size, or the float32 fast scan,
    on luma): bands with their context rows give the whole level's logit map, band by band, whatever the band
    size."""
    from service.localiser import band_rows, band_size, geometry, level_pixels, scan_level
    from service.runtime import Runtime
    from service.settings import Settings

    runtime = Runtime.load(Settings(models_dir=Path(__file__).resolve().parents[1] / "models",
                                    providers=["CPUExecutionProvider"], workers=1, level_scan=level_scan))
    cfg = runtime.manifest.localiser
    assert runtime.has_fast_scan(model) and runtime.has_level_scan(model) == level_scan
    s = runtime.level_input_scale(model)
    assert s == (0.5 if level_scan else 1.0)
    geom = geometry(cfg, s)
    assert (geom.stride, geom.window, geom.context) == (16 * s, 64 * s, 32 * s)
    photo = Image.fromarray(load_sample_image("china.jpg")).resize((1920, 1280)).convert("L")
    level = level_pixels(photo, cfg.window / cfg.min_face_size * s, geom.stride)  # 3072 x 2048 (x s), on the stride
    width = round(3072 * s)
    assert level.shape == (round(2048 * s), width, 1) and level.dtype == np.uint8
    whole = runtime.scan_band(model, (level.transpose(2, 0, 1)[None] / np.float32(255)).astype(np.float32))
    assert whole.shape == (2048 // 16 - 3, 3072 // 16 - 3)  # the same windows at either size
    for band_pixels in (600_000 * s * s, 1024 * 1024 * s * s):  # 5 and 14 rows of windows a band
        band_pixels = int(band_pixels)
        assert band_rows(width, geom, band_pixels) == (band_pixels // width - 128 * s) // (16 * s) + 1
        assert band_size(width, round(2048 * s), geom, band_pixels) <= band_pixels
        np.testing.assert_allclose(scan_level(runtime, model, level, geom, band_pixels), whole, rtol=0, atol=1e-5)
