"""Data-parallel training throughput: the same DB-VAE / CNN training run with 1 and 2 processes
(torchrun, gloo on CPU; NCCL where GPUs are given) on synthetic 64x64 data in the lab layout.

    python -m bench.ddp                      # 1 vs 2 processes, 110k images (the lab file's order of size)
    python -m bench.ddp --images 20000 --steps 20
    python -m bench.ddp --accuracy           # full default training on the built-in set, 1 vs 2 processes
    python -m bench.ddp --procs 1 --out gpu_ddp   # a one-GPU machine: the one-process baseline only

Synthetic pixels (no accuracy is measured, only images per second); the resampling pass, which
encodes every training face, is timed apart from the training steps. Prints a table and writes
bench/results/ddp.json (ddp_accuracy.json with --accuracy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import OUT_HELP, write_result
from service.process import free_port
from training.data.h5 import H5Writer

ROOT = Path(__file__).resolve().parents[1]


def synthetic_h5(path: Path, n: int, seed: int = 0) -> Path:
    """n random uint8 images, half labelled face, in chunks (never n images in memory at once)."""
    rng = np.random.default_rng(seed)
    with H5Writer(path) as w:
        for start in range(0, n, 4096):
            k = min(4096, n - start)
            w.append(rng.integers(0, 256, (k, 64, 64, 3), dtype=np.uint8), (np.arange(start, start + k) % 2))
    return path


def run(procs: int, h5: Path, model: str, steps: int, batch: int, threads: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}", "--rdzv-backend=c10d",
           f"--rdzv-endpoint=127.0.0.1:{free_port()}", "-m", "training", "--source", "h5", "--h5", str(h5),
           "--models", model, "--epochs", "1", "--mine-rounds", "0", "--steps-per-epoch", str(steps), "--batch-size", str(batch),
           "--val-fraction", "0.01", "--out-dir", str(out / "models"), "--checkpoint-dir", str(out / "ckpt"),
           "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{procs}-process run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    record = torch.load(out / "ckpt" / f"{model}.pt", weights_only=False)["history"][-1]
    return {"processes": procs, "model": model, "threads_per_process": threads, "wall_s": time.perf_counter() - t,
            "train_s": record["seconds"]["train"], "resample_s": record["seconds"]["resample"],
            "train_images_per_s": record["train_images_per_s"]}


def accuracy_run(procs: int, out: Path) -> dict:
    """The README's default training (built-in data, default global batch), on `procs` processes."""
    common = ["-m", "training", "--out-dir", str(out / "models"), "--checkpoint-dir", str(out / "ckpt"),
              "--no-progress"]
    if procs == 1:
        cmd = [sys.executable, *common]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}", "--rdzv-backend=c10d",
               f"--rdzv-endpoint=127.0.0.1:{free_port()}", *common]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // procs)), "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{procs}-process run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    manifest = json.loads((out / "models" / "manifest.json").read_text())
    return {"processes": procs, "wall_s": time.perf_counter() - t,
            **{kind: {k: entry["metrics"]["val"][k] for k in ("balanced_accuracy", "roc_auc", "recall", "specificity")}
               for kind, entry in manifest["models"].items()}}


def accuracy(tolerance: float, out: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = [accuracy_run(p, Path(tmp) / str(p)) for p in (1, 2)]
    print(f"{'procs':>5} {'model':<6} {'bal. acc':>9} {'ROC AUC':>8} {'recall':>7} {'specif.':>8} {'wall s':>7}")
    for r in rows:
        for kind in ("cnn", "dbvae"):
            m = r[kind]
            print(f"{r['processes']:>5} {kind:<6} {m['balanced_accuracy']:>9.3f} {m['roc_auc']:>8.3f} "
                  f"{m['recall']:>7.3f} {m['specificity']:>8.3f} {r['wall_s']:>7.0f}")
    gaps = {kind: abs(rows[0][kind]["balanced_accuracy"] - rows[1][kind]["balanced_accuracy"]) for kind in ("cnn", "dbvae")}
    verdict = all(g <= tolerance for g in gaps.values())
    print(f"balanced-accuracy gap 1 vs 2 processes: {gaps} (tolerance {tolerance}): {'within' if verdict else 'OUTSIDE'}")
    machine = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__}
    result = {"machine": machine, "tolerance": tolerance, "gaps": gaps, "within_tolerance": verdict, "rows": rows}
    print(f"wrote {write_result(out, result)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=110_000)
    ap.add_argument("--steps", type=int, default=40, help="training steps timed per run")
    ap.add_argument("--batch", type=int, default=64, help="global batch size (the same for 1 and 2 processes)")
    ap.add_argument("--models", default="cnn,dbvae")
    ap.add_argument("--procs", default="1,2", help="process counts to run (2 processes need 2 GPUs under NCCL)")
    ap.add_argument("--out", default="", help=OUT_HELP + " (default: ddp, or ddp_accuracy with --accuracy)")
    ap.add_argument("--accuracy", action="store_true", help="compare validation accuracy instead of throughput")
    ap.add_argument("--tolerance", type=float, default=0.02, help="--accuracy: allowed balanced-accuracy gap")
    args = ap.parse_args()
    if args.accuracy:
        return accuracy(args.tolerance, args.out or "ddp_accuracy")
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        h5 = synthetic_h5(Path(tmp) / "synthetic.h5", args.images)
        for model in args.models.split(","):
            for procs in (int(p) for p in args.procs.split(",")):
                # The same cores either way: one process with all threads, or the threads split between two.
                rows.append(run(procs, h5, model, args.steps, args.batch, max(1, cores // procs),
                                Path(tmp) / f"{model}-{procs}"))
    for r in rows:
        base = min((b for b in rows if b["model"] == r["model"]), key=lambda b: b["processes"])
        r["speed_up"] = r["train_images_per_s"] / base["train_images_per_s"]
        r["scaling_efficiency"] = r["speed_up"] * base["processes"] / r["processes"]
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    machine = {"platform": platform.platform(), "cpu_count": cores, "torch": torch.__version__,
               "cuda": gpu, "backend": "nccl" if gpu else "gloo"}
    print(f"{'model':<6} {'procs':>5} {'threads':>7} {'train img/s':>12} {'speed-up':>9} {'efficiency':>10} "
          f"{'resample s':>10}")
    for r in rows:
        print(f"{r['model']:<6} {r['processes']:>5} {r['threads_per_process']:>7} {r['train_images_per_s']:>12.0f} "
              f"{r['speed_up']:>9.2f} {r['scaling_efficiency']:>10.2f} {r['resample_s']:>10.1f}")
    print(f"machine: {machine}; {args.images} synthetic images, {args.steps} steps of global batch {args.batch}")
    print(f"wrote {write_result(args.out or 'ddp', {'machine': machine, 'settings': vars(args), 'rows': rows})}")


if __name__ == "__main__":
    main()
