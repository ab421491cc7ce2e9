"""The fast scan (training/fast_scan.py, service/fast_scan.py) on the committed models and real pictures: its
logit map is the scan graph's wherever a window can become a candidate, both halves compute the same map, and
the export picks its rank from the error it measures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_image

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture(scope="module")
def runtime():
    """The service's graphs with pyramid levels through the float32 fast scan, as these tests are about it (the
    level scan, which replaces its stage 1 on levels by default, has its own: tests/test_level_scan.py)."""
    from service.runtime import Runtime
    from service.settings import Settings

    return Runtime.load(Settings(models_dir=MODELS, providers=["CPUExecutionProvider"], workers=1, level_scan=False))


def pictures() -> list[Image.Image]:
    """Two real scenes (scikit-learn's) and a sheet of 16 real faces (the packaged faces, in the built-in look)."""
    from training.data.builtin import packaged_low_res

    faces, _ = packaged_low_res()
    sheet = faces[:16].reshape(4, 4, 64, 64, 3).transpose(0, 2, 1, 3, 4).reshape(256, 256, 3)
    scenes = [Image.fromarray(load_sample_image(n)).resize((480, 320)) for n in ("china.jpg", "flower.jpg")]
    return [*scenes, Image.fromarray(np.ascontiguousarray(sheet))]


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


@pytest.mark.parametrize("model", ["dbvae", "cnn"])
def test_the_fast_map_is_the_scan_map_wherever_a_window_can_be_a_candidate(runtime, model: str) -> None:
    from service.fast_scan import band_logits
    from service.localiser import level_pixels

    cfg, fast = runtime.manifest.localiser, runtime.manifest.models[model].fast_scan
    assert fast is not None and fast.input == "luma" and runtime.has_fast_scan(model)
    exact_stage, windows, floors = 0, 0, (cfg.scan_threshold, 0.05)
    for image in pictures():
        for scale in (1.0, 0.6):
            rgb = level_pixels(image, scale, cfg.stride)
            exact = runtime.scan(model, (rgb.transpose(2, 0, 1)[None] / np.float32(255)).astype(np.float32))
            luma = level_pixels(image.convert("L"), scale, cfg.stride)
            assert luma.shape == (*rgb.shape[:2], 1)
            band = (luma.transpose(2, 0, 1)[None] / np.float32(255)).astype(np.float32)
            for floor in floors:
                got = band_logits(runtime, model, band, floor)
                assert got.shape == exact.shape
                where = (exact >= logit(floor)) | (got >= logit(floor))
                # Exact but for the luma's rounding to 8 bits (the RGB scan rounds each channel instead).
                np.testing.assert_allclose(got[where], exact[where], atol=0.05)
                assert (got[~where] < logit(floor)).all()
                if floor == cfg.scan_threshold:
                    exact_stage += int(where.sum())
            windows += exact.size
    assert exact_stage > 10  # the face sheet's faces reach the candidate threshold
    # The approximate stage alone decides most windows: within the margin of the threshold are few.
    from service.fast_scan import survivors

    approx, _ = runtime.fast_scan(model, band)
    assert len(survivors(approx, cfg.scan_threshold, cfg.fast_scan_margin)[0]) < approx.size


@pytest.mark.parametrize("model", ["dbvae", "cnn"])
def test_training_and_service_fast_scans_give_the_same_map(runtime, model: str) -> None:
    """The two copies (the halves share no code) on the same graphs and level, at two floors."""
    import json

    from service.fast_scan import band_logits
    from training.localiser import FastGraphs, level_input

    entry = json.loads((MODELS / "manifest.json").read_text())["models"][model]
    graphs = FastGraphs.from_entry(MODELS, entry, level_scan=False)
    image = pictures()[2].resize((320, 320))
    x = level_input(graphs.level_image(image), 1.0, 16)
    for floor in (0.7, 0.05):
        np.testing.assert_allclose(graphs.logit_map(x.copy(), floor, 2.0), band_logits(runtime, model, x, floor),
                                   rtol=0, atol=1e-5)


@pytest.mark.parametrize("model", ["dbvae", "cnn"])
def test_refining_crops_of_the_luma_score_as_the_scan_graph_scores_the_rgb_crops(runtime, model: str) -> None:
    """Refining crops are cut from the luma and scored by the two fast-scan stages on whole windows, in both
    halves: the scan graph's logits of the same squares cut from the RGB photo, but for the luma's rounding."""
    import json

    from service.localiser import refine as served_refine
    from training.localiser import FastGraphs, Localiser, LocaliserConfig, refine, refine_squares, square_crops

    entry = json.loads((MODELS / "manifest.json").read_text())["models"][model]
    cfg = LocaliserConfig(**json.loads((MODELS / "manifest.json").read_text())["localiser"])
    trained = Localiser.for_model(MODELS, entry, cfg)
    assert isinstance(trained.fast, FastGraphs) and trained.fast.luma
    photo = Image.fromarray(load_sample_image("china.jpg"))  # 640x427
    boxes = np.array([[40.0, 30.0, 90.0, 90.0, 0.9], [300.0, 120.0, 150.0, 150.0, 0.9], [500.0, 300.0, 64.0, 64.0, 0.9]])
    squares = refine_squares(boxes, cfg, *photo.size).reshape(-1, 3)  # 81 squares, 3 sizes
    luma = trained.scanned(photo)
    assert luma.mode == "L"
    crops = square_crops(luma, squares, cfg.window)
    assert crops.shape == (len(squares), 1, 64, 64)
    got = trained.fast.window_logits(crops)
    exact = Localiser(MODELS / entry["graphs"]["scanner"], cfg).crop_probabilities(square_crops(photo, squares, 64))
    np.testing.assert_allclose(got, np.log(exact / (1 - exact)), atol=0.05)
    # The service's copy: the same logits for the same luma crops, and the same refined boxes.
    np.testing.assert_allclose(runtime.window_crop_logits(model, crops), got, rtol=0, atol=1e-5)
    served = served_refine(runtime, model, luma, boxes, runtime.manifest.localiser)
    ours = refine(luma, boxes, cfg, trained.crop_probabilities)
    assert len(served) == len(ours) == len(boxes)
    np.testing.assert_allclose(served, ours, rtol=0, atol=1e-4)


def test_window_features_cut_each_windows_4x4_block() -> None:
    from service.fast_scan import window_features as served
    from training.fast_scan import window_features as trained

    features = np.arange(2 * 6 * 7, dtype=np.float32).reshape(2, 6, 7)
    rows, cols = np.array([0, 2, 1]), np.array([3, 0, 2])
    for cut in (served(features, rows, cols), trained(features, rows, cols)):
        assert cut.shape == (3, 2, 4, 4)
        for k, (r, c) in enumerate(zip(rows, cols)):
            np.testing.assert_array_equal(cut[k], features[:, r:r + 4, c:c + 4])


def test_the_export_takes_the_smallest_rank_whose_error_fits_half_the_margin() -> None:
    import torch

    from training.fast_scan import choose_rank, export_scan
    from training.model import FaceCNN, ModelConfig

    torch.manual_seed(0)
    scan = export_scan(FaceCNN(ModelConfig(front_end="grey-lowpass")).eval())  # untrained: a flat spectrum
    loose = choose_rank(scan, 1, 64, 1e3, 0.7)
    assert loose["rank"] == 64 and loose["windows"] > 10_000
    # A threshold far below every window's logit makes every window "near" it, so each counts.
    tight = choose_rank(scan, 1, 64, 1e-3, 1e-6)
    assert tight["rank"] == 512  # only full rank is within 5e-4 of the exact logits
    assert tight["max_error_near_threshold"] <= 5e-4
    assert loose["max_error_near_threshold"] > tight["max_error_near_threshold"]
