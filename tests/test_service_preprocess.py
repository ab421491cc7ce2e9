"""The service's pre-processing is the training pipeline's, bit for bit, and refuses bad bytes clearly."""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service import preprocess
from service.problems import ProblemError
from tests.utils.images import bad_inputs, encode, picture, png_declaring, variants, with_orientation
from training.data import image as training_image

REPO = Path(__file__).resolve().parent.parent
CASES = [(f"seed{seed}/{name}", data) for seed in (0, 5) for name, data in variants(seed).items()]


def decode(data: bytes, max_pixels: int = 50_000_000) -> np.ndarray:
    return preprocess.decode(data, size=64, max_pixels=max_pixels)


@pytest.mark.parametrize(("name", "data"), CASES, ids=[c[0] for c in CASES])
def test_identical_to_training_pipeline(name: str, data: bytes, tmp_path: Path) -> None:
    ours = decode(data)
    path = tmp_path / name.replace("/", "_")
    path.write_bytes(data)
    from_bytes, from_file = training_image.load_image(data), training_image.load_image(path)
    assert ours.dtype == np.uint8 and ours.shape == (64, 64, 3)
    np.testing.assert_array_equal(ours, from_bytes)
    np.testing.assert_array_equal(ours, from_file)
    model_input = preprocess.to_model_input([ours])
    np.testing.assert_array_equal(model_input, training_image.to_model_input(from_bytes[None]))
    assert model_input.dtype == np.float32 and model_input.shape == (1, 3, 64, 64)
    assert 0.0 <= model_input.min() and model_input.max() <= 1.0


@pytest.mark.parametrize(("orientation", "rot90"), [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied(orientation: int, rot90: int) -> None:
    arr = picture(96, 64, seed=2)
    upright = np.ascontiguousarray(np.rot90(arr, rot90))
    np.testing.assert_array_equal(decode(with_orientation(arr, "PNG", orientation)), decode(encode(upright, "PNG")))
    assert not np.array_equal(decode(with_orientation(arr, "PNG", orientation)), decode(encode(arr, "PNG")))


def test_transparent_pixels_become_white() -> None:
    clear = np.zeros((50, 70, 4), np.uint8)
    clear[..., :3] = (200, 10, 10)
    assert (decode(encode(clear, "PNG")) == 255).all()


def test_16_bit_grey_is_scaled_not_clipped() -> None:
    level = np.full((64, 64), 100, np.uint16) * 257  # 25700: clipping would give 255
    out = decode(encode(Image.fromarray(level), "PNG"))
    assert (out == 100).all()


def test_centre_square_crop() -> None:
    wide = np.zeros((64, 192, 3), np.uint8)
    wide[:, :64] = (255, 0, 0)
    wide[:, 64:128] = (0, 0, 255)
    wide[:, 128:] = (0, 255, 0)
    assert (decode(encode(wide, "PNG")) == (0, 0, 255)).all()


@pytest.mark.parametrize(("name", "data", "status"), [(k, *v) for k, v in bad_inputs().items()],
                         ids=list(bad_inputs()))
def test_bad_bytes_raise_the_right_problem(name: str, data: bytes, status: int) -> None:
    with pytest.raises(ProblemError) as err:
        preprocess.decode(data, size=64, max_pixels=50_000_000, label=name)
    assert err.value.status == status
    assert err.value.detail.startswith(name)


def test_pixel_cap_refuses_before_decoding() -> None:
    with pytest.raises(ProblemError) as err:
        decode(encode(picture(300, 200), "PNG"), max_pixels=50_000)
    assert err.value.status == 413 and "60000 pixels" in err.value.detail and "FACEDET_MAX_IMAGE_PIXELS" in err.value.detail
    # 2.5 gigapixels declared in 74 bytes: decoding would need 2.5 GB; the refusal is immediate.
    start = time.perf_counter()
    with pytest.raises(ProblemError) as err:
        decode(png_declaring(50_000, 50_000))
    assert err.value.status == 413 and time.perf_counter() - start < 0.5


def test_pillow_warning_range_is_refused_with_and_without_the_warning_filter() -> None:
    """Between Pillow's limit and twice it, Pillow only warns; both the filter and our own cap refuse it."""
    between = png_declaring(10_000, 10_000)  # 1e8 pixels: above Pillow's 89.5M warning limit, below 2x
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # what the app sets at start-up
        with pytest.raises(ProblemError) as err:
            decode(between, max_pixels=Image.MAX_IMAGE_PIXELS)
        assert err.value.status == 413 and "refused before decoding" in err.value.detail
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(ProblemError) as err:
            decode(between, max_pixels=Image.MAX_IMAGE_PIXELS)
        assert err.value.status == 413 and "FACEDET_MAX_IMAGE_PIXELS" in err.value.detail


def assert_imports_none(modules: str, forbidden: tuple[str, ...]) -> None:
    """Importing `modules` (comma separated) in a fresh interpreter loads no package named in `forbidden`."""
    code = (f"import sys, {modules}; "
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r}); "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_service_imports_neither_training_nor_torch() -> None:
    assert_imports_none("service.main, service.__main__", ("training", "torch"))
    for source in (REPO / "service").rglob("*.py"):
        text = source.read_text()
        assert "import training" not in text and "from training" not in text and "import torch" not in text, source


def test_the_image_admission_onnx_and_localiser_layers_import_no_web_framework() -> None:
    """Only the routes, uploads, errors, middleware and main know about HTTP (the ONNX layer least of all)."""
    assert_imports_none("service.runtime, service.admission, service.pipeline, service.localiser, service.preprocess",
                        ("fastapi", "starlette", "uvicorn"))


def test_large_jpeg_is_decoded_at_a_reduced_scale_that_barely_changes_the_input() -> None:
    """A 1024x768 photo decodes at half scale (still 2x the model size) in both pipelines, close to full size."""
    import io

    from sklearn.datasets import load_sample_image

    buf = io.BytesIO()
    photo = Image.fromarray(load_sample_image("china.jpg"))
    photo.resize((1024, 768), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    ours = decode(jpeg)
    np.testing.assert_array_equal(ours, training_image.load_image(jpeg))
    with Image.open(io.BytesIO(jpeg)) as im:
        im.load()  # no draft: every pixel at full size
        full = preprocess.prepare(im, 64)
    diff = np.abs(ours.astype(np.int16) - full.astype(np.int16))
    assert 0.0 < diff.mean() < 1.0 and diff.max() <= 8  # not the full decode, but within a grey level on average
