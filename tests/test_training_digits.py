"""training/digits.py: shapes, the seeded test changes, one short real training run with ONNX export and parity,
and --predict on drawn image files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training import digits
from training.digits import DigitCNN, DigitsConfig, TRANSFORMS


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """One short real run: 2,000 training digits, 3 epochs per model (a few seconds per model on 2 cores)."""
    tmp = tmp_path_factory.mktemp("digits")
    cfg = DigitsConfig(train_limit=2000, epochs=3, out_dir=str(tmp / "onnx"), results=str(tmp / "digits.json"),
                       reports_dir="", progress=False)
    result = digits.run(cfg)
    _, _, x_test, y_test = digits.load_digits(cfg)
    return cfg, result, x_test, y_test


def test_shapes_and_ranges():
    x = torch.rand(5, 1, 28, 28)
    assert DigitCNN(width=8, hidden=16)(x).shape == (5, 10)
    g = torch.Generator().manual_seed(0)
    aug = digits.augment_digits(x, DigitsConfig(), g)
    assert aug.shape == x.shape and aug.min() >= 0 and aug.max() <= 1
    changed = digits.written_by_someone_else(x, 0)
    assert list(changed) == list(TRANSFORMS)
    assert all(v.shape == x.shape for v in changed.values())


def test_warp_and_stroke_do_what_they_say():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 10:18, 13:15] = 1.0  # a vertical bar, 2 px wide, 8 tall
    n1, z = torch.ones(1), torch.zeros(1)
    assert torch.allclose(digits.warp(x, z, n1, n1, z, z), x, atol=1e-6)  # the identity warp changes nothing
    moved = digits.warp(x, z, n1, n1, torch.tensor([4.0]), torch.tensor([-3.0]))
    assert torch.allclose(moved[0, 0, 7:15, 17:19], torch.ones(8, 2), atol=1e-5)  # 4 px right, 3 px up
    assert torch.isclose(moved.sum(), x.sum(), atol=1e-4)
    turned = digits.warp(x, torch.tensor([90.0]), n1, n1, z, z)[0, 0]
    assert (turned > 0.5).sum(0).max() <= 2 and (turned > 0.5).sum(1).max() >= 7  # now a horizontal bar
    bar = torch.zeros(1, 1, 28, 28)
    bar[0, 0, 8:20, 12:15] = 1.0  # 3 px wide, as an MNIST stroke's core
    thick, thin = digits.stroke(bar, 2), digits.stroke(bar, -1)
    width = lambda im: float(im[0, 0, 14].sum())  # noqa: E731  (ink across the bar's middle row, in pixels)
    assert (width(thick), width(bar), width(thin)) == pytest.approx((5, 3, 2), abs=1e-5)
    assert float(thin.max()) == pytest.approx(1.0)


def test_test_changes_are_deterministic():
    x = torch.rand(20, 1, 28, 28)
    a, b, c = (digits.written_by_someone_else(x, s) for s in (7, 7, 8))
    for kind in TRANSFORMS:
        assert torch.equal(a[kind], b[kind])
    for kind in ("off-centre", "rotated", "resized", "combined"):  # thicker / thinner draw nothing
        assert not torch.allclose(a[kind], c[kind])
    cfg = DigitsConfig()
    g1, g2, g3 = (torch.Generator().manual_seed(s) for s in (3, 3, 4))
    assert torch.equal(digits.augment_digits(x, cfg, g1), digits.augment_digits(x, cfg, g2))
    assert not torch.allclose(digits.augment_digits(x, cfg, g1), digits.augment_digits(x, cfg, g3))


def test_short_run_exports_with_parity_and_reports(trained):
    cfg, result, x_test, _ = trained
    saved = json.loads(Path(cfg.results).read_text())
    assert saved["data"] == {**result["data"], "train": 2000, "test": 1000, "transformed_test": 6000}
    for name in ("plain", "augmented"):
        m = saved["models"][name]
        assert Path(m["onnx"]).is_file() and m["parity_max_abs_error"] < 1e-4
        assert m["clean"] > 0.88 and 0.3 < m["transformed"] < 1
        assert list(m["by_transform"]) == list(TRANSFORMS)
        assert np.isclose(np.mean(list(m["by_transform"].values())), m["transformed"])
        cm = np.array(m["confusion_transformed"])
        assert cm.shape == (10, 10) and cm.sum() == 6000 and (cm.sum(1) == 600).all()
        assert np.trace(cm) / 6000 == pytest.approx(m["transformed"])
        assert len(m["history"]) == 3
    # The ONNX file gives the accuracy the JSON states on the clean test split.
    logits = digits.onnx_logits(Path(saved["models"]["plain"]["onnx"]), x_test)
    assert (logits.argmax(1) == trained[3].numpy()).mean() == pytest.approx(saved["models"]["plain"]["clean"])
    section = digits.readme_section(saved)
    aug = saved["models"]["augmented"]
    assert f"| augmented | {aug['clean']:.1%} | {aug['transformed']:.1%} |" in section
    assert "reports/digits_confusion.png" in section and "reports/digits_augmentations.png" in section
    assert digits.format_table(saved).splitlines()[0].split() == ["model", "clean", "transformed", *TRANSFORMS]


def _draw(x: torch.Tensor, path: Path, dark_on_light: bool, canvas=(200, 160), at=(30, 50)) -> str:
    """A real 28x28 test digit upscaled to 120x120 and pasted off-centre into a larger page."""
    ink = (x[0].numpy() * 255).astype(np.uint8)
    big = Image.fromarray(255 - ink if dark_on_light else ink).resize((120, 120), Image.Resampling.BICUBIC)
    page = Image.new("L", canvas, 255 if dark_on_light else 0)
    page.paste(big, at)
    page.save(path)
    return str(path)


def test_predict_on_drawn_digits(trained, tmp_path, capsys):
    cfg, _, x_test, y_test = trained
    picks = [int((y_test == d).nonzero()[0]) for d in range(10)]  # the first test digit of each class
    paths = [_draw(x_test[i], tmp_path / f"digit{d}.png", dark_on_light=d % 2 == 0) for d, i in enumerate(picks)]
    assert digits.main(["--predict", *paths, "--out-dir", cfg.out_dir]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 10 and all("augmented model" in line for line in lines)
    got = [int(line.split(": ")[1].split()[0]) for line in lines]
    assert sum(g == d for d, g in enumerate(got)) >= 9
    prediction = digits.predict(paths[3:4], cfg)  # a clean 3, dark on light
    assert prediction[0][0] == 3 and 0.5 < prediction[0][1] <= 1


def test_to_mnist_inverts_crops_and_centres(trained, tmp_path):
    x = trained[2][0]
    light = digits.to_mnist(_draw(x, tmp_path / "light.png", dark_on_light=True))
    dark = digits.to_mnist(_draw(x, tmp_path / "dark.png", dark_on_light=False, canvas=(300, 300), at=(170, 5)))
    assert light.shape == (1, 1, 28, 28) and torch.allclose(light, dark, atol=0.02)  # same digit, same frame
    ys, xs = np.nonzero(light[0, 0].numpy() > 0.25)
    assert max(np.ptp(ys), np.ptp(xs)) in (18, 19, 20)  # the ink's box fills 20 px, as in MNIST
    mass = light[0, 0].numpy()
    iy, ix = np.indices(mass.shape)
    assert abs((iy * mass).sum() / mass.sum() - 14) <= 1 and abs((ix * mass).sum() / mass.sum() - 14) <= 1


def test_cli_errors(tmp_path, capsys):
    blank = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(blank)
    assert digits.main(["--predict", str(blank), "--out-dir", str(tmp_path)]) == 2
    assert "no model" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no ink"):
        digits.to_mnist(str(blank))
    assert digits.main(["--test-fraction", "1.5"]) == 2
    with pytest.raises(SystemExit) as exit_:
        digits.main(["--help"])
    assert exit_.value.code == 0
