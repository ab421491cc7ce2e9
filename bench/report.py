"""The model report: figures in reports/ drawn from the committed models alone (models/: the ONNX graphs and
manifest.json), so a fresh clone without checkpoints/ regenerates it.

    python -m bench.report                                     # default models, their data's held-out split
    python -m bench.report --faces ppb/                        # adds that face set's fairness card

Figures (each states the data it came from in its footer) and reports/report.md, which lists them:
* training_curves.png — loss terms and validation metrics per epoch, CNN vs DB-VAE (the manifest's
                        metrics.history: the same per-epoch records the checkpoints hold)
* resampling.png      — how far the DB-VAE's sampling distribution was from uniform, per epoch, and the final one
* sampled_most.png / sampled_least.png — the training faces the final DB-VAE draws most / least often
  (probabilities recomputed with training.resampling over the ONNX encoder's mu of the training faces, as
  training does at the start of an epoch with the PyTorch encoder: mu agrees with it to ~1e-6)
* roc.png             — ROC curves of the exported ONNX models on the validation split
* reconstructions.png — validation faces and their DB-VAE reconstructions (ONNX encoder mu -> decoder)
* morph.png           — a latent walk between two validation faces, as the service's /v1/morph does it:
                        mu_a + t (mu_b - mu_a), t in linspace(0, 1, steps), decoded by the ONNX decoder
* fairness.png        — the manifest's fairness cards: recall and mean face probability per latent-rarity decile
                        (and per group, when the card has groups), CNN beside DB-VAE, bootstrap intervals as
                        error bars
* fairness_faces.png  — the same card computed on a face folder given with --faces (group sub-folders or --groups)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402 - training.resampling works on tensors
from sklearn.metrics import roc_curve  # noqa: E402

from training.contract import SCORING_GRAPH  # noqa: E402
from training.data.image import to_model_input  # noqa: E402
from training.data.sources import manifest_split, open_source  # noqa: E402
from training.environment import environment  # noqa: E402
from training.evaluation import evaluate_models  # noqa: E402
from training.fairness import CardInputs  # noqa: E402
from training.manifest import load_manifest  # noqa: E402
from training.metrics import binary_metrics, sigmoid  # noqa: E402
from training.reconstruction import decoded_summary  # noqa: E402
from training.reporting import fairness_chart  # noqa: E402
from training.resampling import sampling_probabilities  # noqa: E402

COLOURS = {"cnn": "tab:blue", "dbvae": "tab:orange"}


def save(fig, out: Path, name: str, footer: str) -> Path:
    """Every figure carries where its data came from."""
    fig.text(0.01, 0.005, footer, fontsize=7, color="0.3", ha="left", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path = out / name
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def image_grid(ax, images: np.ndarray, cols: int, captions: list[str] | None = None) -> None:
    """uint8 or float [N, 64, 64, 3] -> one mosaic on ax, with optional per-tile captions."""
    images = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images
    n, s = len(images), images.shape[1]
    rows = int(np.ceil(n / cols))
    canvas = np.ones((rows * (s + 2), cols * (s + 2), 3), np.float32)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * (s + 2):r * (s + 2) + s, c * (s + 2):c * (s + 2) + s] = im
        if captions:
            ax.text(c * (s + 2) + 2, r * (s + 2) + s - 3, captions[i], fontsize=6, color="yellow",
                    bbox={"facecolor": "black", "alpha": 0.5, "pad": 0.5, "lw": 0})
    ax.imshow(np.clip(canvas, 0, 1))
    ax.axis("off")


def training_curves(histories: dict, out: Path, footer: str) -> Path:
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
    for kind, hist in histories.items():
        ep = [h["epoch"] for h in hist]
        style = {"color": COLOURS[kind], "label": kind.upper()}
        axes[0].plot(ep, [h["loss"] for h in hist], **style)
        axes[1].plot(ep, [h["bce"] for h in hist], **style)
        axes[3].plot(ep, [h["val"]["balanced_accuracy"] for h in hist], **style)
        axes[3].plot(ep, [h["val"]["roc_auc"] for h in hist], ls="--", color=COLOURS[kind], label=f"{kind.upper()} AUC")
    if "dbvae" in histories:
        hist = histories["dbvae"]
        ep = [h["epoch"] for h in hist]
        axes[2].plot(ep, [h["recon"] for h in hist], color="tab:green", label="L1 reconstruction")
        kl_ax = axes[2].twinx()
        kl_ax.plot(ep, [h["kl"] for h in hist], color="tab:red", label="KL (right axis)")
        kl_ax.set_ylabel("KL")
        axes[2].legend(handles=axes[2].get_lines() + kl_ax.get_lines(), fontsize=7)
    for ax, title in zip(axes, ["total training loss", "classification (BCE)", "DB-VAE: VAE terms (faces)",
                                "validation: balanced accuracy, ROC AUC"]):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7)
    axes[3].legend(fontsize=7)
    return save(fig, out, "training_curves.png", footer)


def resampling_figure(hist: list[dict], p: np.ndarray, out: Path, footer: str) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    ep = [h["epoch"] for h in hist if "resampling" in h]
    stats = [h["resampling"] for h in hist if "resampling" in h]
    axes[0].plot(ep, [s["max_min_ratio"] for s in stats], marker=".")
    axes[0].set_title("max / min sampling probability", fontsize=10)
    axes[1].plot(ep, [s["ess_fraction"] for s in stats], marker=".", label="effective sample size / N")
    axes[1].plot(ep, [s["max_over_uniform"] for s in stats], marker=".", label="max probability x N")
    axes[1].axhline(1.0, color="0.6", lw=0.8, ls=":")
    axes[1].set_title("distance from uniform (1 = uniform)", fontsize=10)
    axes[1].legend(fontsize=7)
    for ax in axes[:2]:
        ax.set_xlabel("epoch (probabilities computed at its start)")
    axes[2].hist(p * len(p), bins=30, color="tab:orange")
    axes[2].axvline(1.0, color="k", lw=0.8, ls=":", label="uniform")
    axes[2].set_xlabel("sampling probability x number of training faces")
    axes[2].set_ylabel("training faces")
    axes[2].set_title("final DB-VAE: distribution over training faces", fontsize=10)
    axes[2].legend(fontsize=7)
    return save(fig, out, "resampling.png", footer)


def faces_grid(images: np.ndarray, p: np.ndarray, title: str, out: Path, name: str, footer: str) -> Path:
    fig, ax = plt.subplots(figsize=(8, int(np.ceil(len(images) / 8)) + 1.2))  # square tiles + title + footer
    image_grid(ax, images, 8, [f"{v:.2f}x" for v in p])
    ax.set_title(title, fontsize=10)
    return save(fig, out, name, footer)


def roc_figure(models_dir: Path, manifest: dict, images: np.ndarray, y: np.ndarray, out: Path, footer: str) -> Path:
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    for kind, entry in manifest["models"].items():
        sess = session(models_dir / entry["graphs"][SCORING_GRAPH[kind]])
        prob = sigmoid(sess.run(["logit"], {"image": to_model_input(images)})[0])
        m = binary_metrics(y, prob, float(entry["threshold"]))
        fpr, tpr, _ = roc_curve(y, prob)
        ax.plot(fpr, tpr, color=COLOURS.get(kind), label=f"{kind.upper()}: AUC {m['roc_auc']:.3f}, "
                                                         f"bal. acc {m['balanced_accuracy']:.3f}")
    ax.plot([0, 1], [0, 1], color="0.7", ls=":", lw=0.8)
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (face recall)")
    ax.set_title("ROC on the validation split (ONNX)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    return save(fig, out, "roc.png", footer)


def reconstructions(enc, dec, faces: np.ndarray, out: Path, footer: str) -> Path:
    _, mu, _ = enc.run(["logit", "mu", "logvar"], {"image": to_model_input(faces)})
    decode = lambda z: np.clip(dec.run(["image"], {"z": z})[0], 0, 1).transpose(0, 2, 3, 1)  # noqa: E731
    recon = decode(mu)  # decode the mean: no sampling noise
    pairs = [im for pair in zip(faces.astype(np.float32) / 255.0, recon) for im in pair]
    r = decoded_summary(faces.astype(np.float32) / 255.0, mu, decode)
    nearing = f", morphs nearer to B frame by frame {r['morph_nearing_b']:.0%}" if "morph_nearing_b" in r else ""
    fig, ax = plt.subplots(figsize=(9, 9 * int(np.ceil(len(pairs) / 8)) / 8 + 1.6))
    image_grid(ax, np.stack(pairs), 8)
    ax.set_title("validation faces (left of each pair) and DB-VAE reconstructions decode(mu) (right)\n"
                 f"PSNR {r['psnr_db']:.1f} dB (mean face {r['mean_face_psnr_db']:.1f}), SSIM {r['ssim']:.2f} "
                 f"(mean face {r['mean_face_ssim']:.2f}), own-face correlation {r['correlation_own']:.2f} vs others "
                 f"{r['correlation_others']:.2f},\nidentified top-1 {r['identified_top1']:.0%} (chance "
                 f"{r['chance_top1']:.0%}), morph ends {r['morph_ends_identified']:.0%}{nearing}", fontsize=8)
    return save(fig, out, "reconstructions.png", footer)


def morph(enc, dec, a: np.ndarray, b: np.ndarray, steps: int, out: Path, footer: str) -> Path:
    _, mu, _ = enc.run(["logit", "mu", "logvar"], {"image": to_model_input(np.stack([a, b]))})
    t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
    z = mu[0:1] + t * (mu[1:2] - mu[0:1])  # same interpolation as the service's /v1/morph
    frames = dec.run(["image"], {"z": z.astype(np.float32)})[0].transpose(0, 2, 3, 1)
    strip = np.concatenate([a[None].astype(np.float32) / 255.0, frames, b[None].astype(np.float32) / 255.0])
    flat = np.clip(frames, 0, 1).reshape(len(frames), -1).astype(np.float64)
    to_b = np.sqrt(((flat - flat[-1]) ** 2).mean(1))  # RMS distance to the last frame, as /v1/morph reports it
    fig, ax = plt.subplots(figsize=(1.1 * len(strip), 2.0))
    image_grid(ax, strip, len(strip), ["input A"] + [f"t={v:.2f}\nto B {d:.3f}" for v, d in zip(t[:, 0], to_b)]
               + ["input B"])
    ax.set_title(f"latent morph A -> B: decode(mu_A + t (mu_B - mu_A)), {steps} steps (ONNX encoder/decoder)",
                 fontsize=10)
    return save(fig, out, "morph.png", footer)


def run(args) -> list[tuple[str, Path]]:
    out, models_dir = Path(args.out), Path(args.models_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(models_dir)
    data = manifest["data"]
    src_name = data.get("source", "builtin")
    source, train_idx, val_idx = manifest_split(data, args.cache_dir)
    versions = ", ".join(f"{k} {e['version']}" for k, e in manifest["models"].items())
    data_line = (f"data: source '{src_name}' (seed {data['seed']}, val fraction {data['val_fraction']})"
                 f"; models: {versions} (manifest {manifest['created']})")
    histories = {k: e["metrics"]["history"] for k, e in manifest["models"].items() if e["metrics"].get("history")}
    figures = []
    hist_line = "; ".join(f"{k}: {len(h)} epochs" for k, h in histories.items())
    figures.append(("Training curves", training_curves(histories, out,
                    f"From the per-epoch histories in {models_dir}/manifest.json ({hist_line}); training-batch "
                    f"losses, validation metrics on the held-out split. {data_line}")))

    train_faces = train_idx[source.labels[train_idx] == 1]
    if "dbvae" in manifest["models"]:
        entry, tc = manifest["models"]["dbvae"], manifest.get("training", {})
        enc = session(models_dir / entry["graphs"]["encoder"])
        mu = np.concatenate([enc.run(["mu"], {"image": to_model_input(source.read(train_faces[i:i + 256]))})[0]
                             for i in range(0, len(train_faces), 256)])
        p = sampling_probabilities(torch.from_numpy(mu), tc["hist_bins"], tc["smoothing"]).numpy()
        hist = entry["metrics"].get("history", [])
        foot = (f"Training split faces ({len(train_faces)}), probabilities recomputed from the exported DB-VAE "
                f"encoder's mu ({entry['version']}, after epoch {len(hist)}) as at the start of an epoch; per-epoch "
                f"statistics from the manifest's history. {data_line}")
        figures.append(("Resampling distribution", resampling_figure(hist, p, out, foot)))
        order = np.argsort(p)
        k = min(args.grid, len(order) // 2)
        for name, sel, what in (("sampled_most.png", order[::-1][:k], "most"), ("sampled_least.png", order[:k], "least")):
            figures.append((f"Training faces sampled {what}", faces_grid(
                source.read(train_faces[sel]), p[sel] * len(p),
                f"{k} training faces the DB-VAE samples {what} often (probability x N; 1.00x = uniform)",
                out, name, foot)))

    val_y = source.labels[val_idx]
    val_images = source.read(val_idx)
    val_line = f"Validation split: {len(val_idx)} images, {int(val_y.sum())} faces. {data_line}"
    figures.append(("ROC curves", roc_figure(models_dir, manifest, val_images, val_y, out, val_line)))
    if "dbvae" in manifest["models"]:
        graphs = manifest["models"]["dbvae"]["graphs"]
        enc, dec = session(models_dir / graphs["encoder"]), session(models_dir / graphs["decoder"])
        faces = val_images[val_y == 1]
        figures.append(("Reconstructions", reconstructions(enc, dec, faces[:args.grid], out,
                                                            f"First {min(args.grid, len(faces))} faces of the "
                                                            f"validation split. {data_line}")))
        a, b = faces[args.morph[0] % len(faces)], faces[args.morph[1] % len(faces)]
        figures.append(("Morph", morph(enc, dec, a, b, args.steps, out,
                                       f"Validation faces #{args.morph[0]} and #{args.morph[1]} (in split order). "
                                       f"{data_line}")))
    cards = {k: e["fairness"] for k, e in manifest["models"].items() if e.get("fairness")}
    if cards:
        card = next(iter(cards.values()))
        chart = fairness_chart(cards, out / "fairness.png",
                               f"The manifest's fairness cards: {card['data']['faces']} faces of "
                               f"{card['data']['evaluated']}; {card['bootstrap']['resamples']} bootstrap resamples, "
                               f"{card['bootstrap']['confidence']:.0%} intervals. {data_line}", COLOURS)
        if chart:
            figures.append(("Fairness card", chart))
    if args.faces:
        user = open_source("folders", faces=args.faces, non_faces=args.non_faces, groups=args.groups,
                           cache_dir=args.cache_dir)
        described = f"{args.faces}, every image"
        result = evaluate_models(models_dir, manifest["models"], user, np.arange(len(user)),
                                 CardInputs.for_manifest(manifest, described, (source, train_idx)))
        chart = fairness_chart({k: m["fairness"] for k, m in result["models"].items()}, out / "fairness_faces.png",
                               f"Folder set {described} ({result['data']['faces_evaluated']} faces); ONNX models "
                               f"{versions}.", COLOURS)
        if chart:
            figures.append((f"Fairness card of {args.faces}", chart))
    write_index(out, figures, data_line)
    return figures


def write_index(out: Path, figures: list[tuple[str, Path]], data_line: str) -> None:
    lines = ["# Model report", "", "Generated by `python -m bench.report` from the files in `models/` alone; "
             "every figure's footer says which data it shows.", "", f"_{data_line}_", ""]
    for title, path in figures:
        lines += [f"## {title}", "", f"![{title}]({path.name})", ""]
    (out / "report.md").write_text("\n".join(lines))
    print(f"wrote {out / 'report.md'}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", default="models")
    ap.add_argument("--cache-dir", default=str(environment().cache), help="(default: FACEDET_CACHE)")
    ap.add_argument("--out", default="reports")
    ap.add_argument("--grid", type=int, default=16, help="faces per grid")
    ap.add_argument("--steps", type=int, default=8, help="morph steps (t from 0 to 1 inclusive)")
    ap.add_argument("--morph", type=int, nargs=2, default=[0, 1], metavar=("A", "B"),
                    help="indices of the two validation faces to morph between")
    ap.add_argument("--faces", default="", help="optional face folder for a fairness card (sub-folders = groups)")
    ap.add_argument("--non-faces", default="", help="optional non-face folder to go with --faces")
    ap.add_argument("--groups", default="", help="optional path,group CSV for --faces")
    run(ap.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
