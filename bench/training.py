"""Benchmark 3: training throughput on synthetic data of CelebA's size, stage by stage.

    python -m bench.training                       # CPU (CUDA when torch sees a GPU)
    python -m bench.training --steps 10 --encode 1024

Throughput only, no accuracy. The data are random uint8 64x64 images written with the project's own H5Writer
into a small file in the lab layout; an epoch of CelebA's size (default 202,599 faces, the CelebA image count,
plus as many non-faces) would be ~5 GB on disk and hours on a CPU, so each stage is timed on a bounded number
of steps and the epoch is extrapolated from the per-batch times (stated in the output). Stages, exactly as
training/train.py runs them:

* load      — DataLoader batch: h5 read by index (BGR -> RGB) + uint8 -> float32 NCHW (workers=0, the default)
* augment   — training.train.augment_batch (the batch's non-faces as the scenes faces are zoomed out into)
* step      — training.train.train_step: forward, loss, backward, Adam step
* resample  — DB-VAE only, once per epoch: encode every training face in eval mode (extrapolated from
              --encode faces), sampling_probabilities over [faces, latent_dim] (measured at full size), and
              drawing the epoch's batch indices with those probabilities

The network is the one `python -m training` trains on its defaults (TrainConfig().model_config(): the grey +
low-pass front end and dropout of the built-in source). Next to it, the vectorised sampling_probabilities against
the lab's per-dimension NumPy loop (training.resampling.reference_probabilities), on the same
full-size latent sample; the two must agree (max abs difference printed, asserted below 1e-12).
Caveat: the small file sits in the page cache, so `load` is a best case for a 5 GB file on a cold disk.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import OUT_HELP, finish, load_note, machine, table
from training.config import TrainConfig
from training.data.h5 import H5Source, H5Writer
from training.resampling import reference_probabilities, sampling_probabilities
from training.train import as_input, augment_batch, batches_of, epoch_batches, new_model, predict, train_step

CELEBA_IMAGES = 202_599


def write_synthetic(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with H5Writer(path) as w:
        for start in range(0, n, 1024):
            m = min(1024, n - start)
            w.append(rng.integers(0, 256, (m, 64, 64, 3), dtype=np.uint8), np.arange(start, start + m) % 2)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(kind: str, source: H5Source, cfg: TrainConfig, device: torch.device, steps: int,
               warmup: int = 2) -> dict:
    """Mean seconds per batch for load / augment / step, over `steps` batches after `warmup`: the network,
    augmentation and step of `python -m training` (training.train's new_model, augment_batch, train_step)."""
    model = new_model(kind, cfg, device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator(device=device).manual_seed(0)
    rng = np.random.default_rng(0)
    idx = np.arange(len(source))
    faces, non_faces = idx[source.labels == 1], idx[source.labels == 0]
    batches = epoch_batches(rng, faces, non_faces, np.full(len(faces), 1 / len(faces)), warmup + steps,
                            cfg.batch_size)
    times = {"load": [], "augment": [], "step": []}
    it = iter(batches_of(source, batches, workers=0))
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        images, y = next(it)
        x = as_input(images, device)
        y = y.to(device)
        sync(device)
        t1 = time.perf_counter()
        batch = augment_batch(x, y, cfg, gen, vae_view=kind == "dbvae")
        sync(device)
        t2 = time.perf_counter()
        losses = train_step(kind, model, opt, batch, cfg)
        losses["loss"].item()  # wait for the step, as the training loop does when it logs the loss
        t3 = time.perf_counter()
        if i >= warmup:
            for k, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2)):
                times[k].append(dt)
    return {k: float(np.mean(v)) for k, v in times.items()}


def time_resampling(source: H5Source, cfg: TrainConfig, device: torch.device, n_faces: int, n_encode: int,
                    steps: int, repeats: int = 3) -> tuple[dict, dict]:
    """-> (per-epoch resampling seconds by part, vectorised-vs-lab comparison)."""
    model = new_model("dbvae", cfg, device)
    faces = np.flatnonzero(source.labels == 1)
    enc = np.resize(faces, n_encode)  # repeat the small file's faces up to n_encode
    predict(model, source, enc[: cfg.resample_batch], device, cfg.resample_batch)  # warm-up
    t0 = time.perf_counter()
    predict(model, source, enc, device, cfg.resample_batch, with_mu=True)
    encode_per_face = (time.perf_counter() - t0) / n_encode

    # Full-size latent sample [n_faces, D]: a main mode and a rare one (5%), as a trained encoder would give.
    rng = np.random.default_rng(0)
    mu = rng.standard_normal((n_faces, cfg.latent_dim))
    rare = rng.random(n_faces) < 0.05
    mu[rare] = mu[rare] * 0.3 + 4.0
    mu_t = torch.from_numpy(mu).to(device)
    sampling_probabilities(mu_t[:1000], cfg.hist_bins, cfg.smoothing)  # warm-up
    # Best of `repeats` for both: on a shared machine the minimum is the least disturbed measurement.
    t_vec, t_lab = [], []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        p = sampling_probabilities(mu_t, cfg.hist_bins, cfg.smoothing).cpu().numpy()
        t_vec.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        p_lab = reference_probabilities(mu, cfg.hist_bins, cfg.smoothing)
        t_lab.append(time.perf_counter() - t0)
    t_vec, t_lab = min(t_vec), min(t_lab)
    diff = float(np.abs(p - p_lab).max())
    assert diff < 1e-12, f"vectorised and per-dimension probabilities disagree by {diff:.3e}"

    # The epoch's batch indices drawn with those probabilities (non-faces uniform), as train.py does.
    t0 = time.perf_counter()
    epoch_batches(rng, np.arange(n_faces), np.arange(n_faces, 2 * n_faces), p, steps, cfg.batch_size)
    t_draw = time.perf_counter() - t0
    parts = {"encode": encode_per_face * n_faces, "histograms": t_vec, "draw_batches": t_draw}
    compare = {"faces": n_faces, "latent_dim": cfg.latent_dim, "vectorised_s": t_vec, "numpy_per_dimension_s": t_lab,
               "speedup": t_lab / t_vec, "timing": f"best of {repeats}", "max_abs_diff": diff,
               "probability_max_over_uniform": float(p.max() * n_faces)}
    return parts, compare


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    info = machine(args.threads)
    info["device"] = str(device)
    cfg = TrainConfig(batch_size=args.batch_size, progress=False)
    epoch_images = args.faces + args.non_faces
    steps = math.ceil(epoch_images / cfg.batch_size)  # train.py: one pass over the training images' count
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.h5"
        write_synthetic(path, args.file_images, seed=0)
        source = H5Source(path, name="synthetic")
        resample, compare = time_resampling(source, cfg, device, args.faces, args.encode, steps)
        for kind in ("cnn", "dbvae"):
            per_batch = time_steps(kind, source, cfg, device, args.steps)
            stages = {k: v * steps for k, v in per_batch.items()}
            if kind == "dbvae":
                stages.update({f"resample_{k}": v for k, v in resample.items()})
            total = sum(stages.values())
            row = {"model": kind, "epoch_images": epoch_images, "steps": steps, "epoch_s": total,
                   "images_per_s": epoch_images / total,
                   **{f"{k}_s": v for k, v in stages.items()},
                   "slowest_stage": max(stages, key=stages.get),
                   "per_batch_ms": {k: v * 1e3 for k, v in per_batch.items()}}
            rows.append(row)
            print(f"  {kind}: {row['images_per_s']:.0f} img/s (extrapolated epoch {total / 3600:.2f} h)", flush=True)
    info["load_average_1min_at_end"] = os.getloadavg()[0]
    return {"benchmark": "training", "machine": info, "note": load_note(info),
            "settings": {"faces": args.faces, "non_faces": args.non_faces, "batch_size": cfg.batch_size,
                         "measured_steps": args.steps, "encoded_faces": args.encode,
                         "synthetic_file_images": args.file_images, "workers": 0, "threads": args.threads,
                         "extrapolation": "stage seconds per epoch = mean seconds per batch over the measured steps "
                                          "x steps per epoch; encoding = seconds per face over the encoded faces "
                                          "x faces; histograms and batch drawing measured at full size"},
            "rows": rows, "resampling_vs_numpy": compare}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.training", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=CELEBA_IMAGES, help="training faces in the extrapolated epoch")
    ap.add_argument("--non-faces", type=int, default=CELEBA_IMAGES, help="training non-faces in the epoch")
    ap.add_argument("--steps", type=int, default=20, help="measured training steps per model (after 2 warm-up)")
    ap.add_argument("--encode", type=int, default=2048, help="faces actually encoded to time the encoding pass")
    ap.add_argument("--file-images", type=int, default=4096, help="images in the synthetic h5 file")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--cpu", action="store_true", help="stay on the CPU even when a GPU is present")
    ap.add_argument("--out", default="training", help=OUT_HELP)
    args = ap.parse_args(argv)
    result = run(args)
    m, c = result["machine"], result["resampling_vs_numpy"]
    print(f"\nTraining epoch (extrapolated from {args.steps} steps) — {m['cpu']}, device {m['device']}, "
          f"{args.threads} threads, torch {m['torch']}, {m['date']}")
    cols = [("model", "model", ""), ("epoch_images", "images", ",d"), ("images_per_s", "img/s", ",.0f"),
            ("epoch_s", "epoch s", ",.0f"), ("load_s", "load s", ",.0f"), ("augment_s", "augment s", ",.0f"),
            ("step_s", "step s", ",.0f"), ("resample_encode_s", "encode s", ",.0f"),
            ("resample_histograms_s", "hist s", ".2f"), ("resample_draw_batches_s", "draw s", ".2f"),
            ("slowest_stage", "slowest", "")]
    print(table(result["rows"], cols))
    print(f"\nResampling probabilities over [{c['faces']:,}, {c['latent_dim']}] latent means:")
    print(table([{"impl": "vectorised (training.resampling)", "s": c["vectorised_s"]},
                 {"impl": "NumPy loop per dimension (lab)", "s": c["numpy_per_dimension_s"]}],
                [("impl", "implementation", ""), ("s", "seconds", ".3f")]))
    print(f"speed-up {c['speedup']:.2f}x ({c['timing']}), max abs difference {c['max_abs_diff']:.2e}")
    return finish(args.out, result)


if __name__ == "__main__":
    raise SystemExit(main())
