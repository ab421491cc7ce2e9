"""Training loops for the standard CNN and the DB-VAE, sharing one data pipeline.

Each epoch: (DB-VAE only) encode every training face in eval mode and recompute the sampling
probabilities; draw batches of half faces (by those probabilities, or uniformly for the CNN) and half
non-faces (uniformly); augment; step; validate on the held-out split; checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from training.augment import augment
from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.data.h5 import H5Source
from training.distributed import Dist
from training.metrics import binary_metrics
from training.model import DBVAE, ModelConfig, build_model, cnn_loss, dbvae_loss
from training.resampling import distribution_stats, sampling_probabilities

log = logging.getLogger(__name__)


class BatchReader(Dataset):
    """Maps one array of indices to one batch: (uint8 [B, 64, 64, 3] RGB, labels [B])."""

    def __init__(self, source: H5Source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, indices: np.ndarray):
        return torch.from_numpy(self.source.read(indices)), torch.from_numpy(self.source.labels[indices])


def batches_of(source: H5Source, index_batches: list[np.ndarray], workers: int) -> DataLoader:
    return DataLoader(BatchReader(source), batch_size=None, sampler=index_batches, num_workers=workers,
                      persistent_workers=False)


def as_input(images_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [0, 1]: the same values as to_model_input, the exported
    graphs' input. Converted on the device, so a GPU receives 1 byte per pixel instead of 4."""
    x = images_u8.to(device, non_blocking=True).permute(0, 3, 1, 2)  # [B, 3, H, W]
    return x.float().div_(255.0).contiguous()


@torch.no_grad()
def predict(model, source: H5Source, indices: np.ndarray, device, batch: int = 256,
            workers: int = 0, with_mu: bool = False):
    """Face probabilities [N] (and latent means [N, D] for the DB-VAE) in eval mode, batch by batch,
    so the whole set is never held as float32 at once. The caller's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    probs, mus = [], []
    chunks = [indices[i:i + batch] for i in range(0, len(indices), batch)]
    for images, _ in batches_of(source, chunks, workers):
        x = as_input(images, device)
        if isinstance(model, DBVAE):
            logit, mu, _ = model.encode(x)
            mus.append(mu.double().cpu())
        else:
            logit = model(x)
        probs.append(torch.sigmoid(logit).double().cpu())
    model.train(was_training)
    prob = torch.cat(probs).numpy() if probs else np.zeros(0)
    if with_mu:
        return prob, torch.cat(mus)
    return prob


def epoch_batches(rng: np.random.Generator, faces: np.ndarray, non_faces: np.ndarray, p_faces: np.ndarray,
                  steps: int, batch: int, world: Dist = Dist()) -> list[np.ndarray]:
    """Index batches: half faces drawn with p_faces, half non-faces drawn uniformly. Every rank draws the
    same global batches (same seed) and keeps its 1/world of each half, so N processes see exactly the
    batches one process would, split N ways."""
    half = batch // 2
    f = rng.choice(faces, size=(steps, half), replace=True, p=p_faces)  # [steps, B/2]
    n = rng.choice(non_faces, size=(steps, batch - half), replace=True)
    r, w = world.rank, world.world
    return list(np.concatenate([f[:, r::w], n[:, r::w]], axis=1))  # [steps, B/world]


def train_model(kind: str, cfg: TrainConfig, source: H5Source, train_idx: np.ndarray, val_idx: np.ndarray,
                world: Dist = Dist(), device: torch.device | None = None) -> tuple[torch.nn.Module, dict]:
    """Train one model; -> (model in eval mode, {"history": [...], "val": metrics}).

    Under torchrun every rank runs this; rank 0 alone validates, logs and writes checkpoints. Batch norm
    stays per rank (no SyncBatchNorm): each rank normalises over its own B/world images (16, half of them
    faces, for the default batch on 2 ranks), enough for stable statistics, and it saves a collective per
    layer per step."""
    device = device or torch.device("cpu")
    if cfg.batch_size % (2 * world.world):
        raise ValueError(f"--batch-size {cfg.batch_size} must split into equal face and non-face halves "
                         f"over {world.world} processes (a multiple of {2 * world.world})")
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    rng = np.random.default_rng(cfg.seed + (0 if kind == "cnn" else 1))
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1000 * world.rank)  # own augmentations
    net = build_model(kind, ModelConfig(latent_dim=cfg.latent_dim, dropout=cfg.dropout,
                                        front_end=cfg.model_front_end)).to(device)
    model = net
    if world.enabled:
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.steps_per_epoch or math.ceil(len(train_idx) / cfg.batch_size)
    total_steps = cfg.epochs * steps
    ckpt_path = Path(cfg.checkpoint_dir) / f"{kind}.pt"

    history, start = [], 0
    if cfg.resume and ckpt_path.is_file():
        resumed, ckpt = load_checkpoint(ckpt_path, map_location=device)
        net.load_state_dict(resumed.state_dict())
        opt.load_state_dict(ckpt["optimizer_state"])
        history, start = ckpt["history"], ckpt["epoch"]
        rng = np.random.default_rng([cfg.seed, start])
        gen.manual_seed(cfg.seed + 1000 * world.rank + start)
        log.info("resumed %s from %s at epoch %d", kind, ckpt_path, start)

    labels = source.labels
    faces, non_faces = train_idx[labels[train_idx] == 1], train_idx[labels[train_idx] == 0]
    val = {}
    for epoch in range(start, cfg.epochs):
        record: dict = {"epoch": epoch + 1}
        t0 = time.perf_counter()
        if kind == "dbvae":
            # Each rank encodes its shard of the faces; histograms are combined across ranks, so p is
            # the distribution one process would compute over all faces.
            _, mu = predict(net, source, world.shard(faces), device, cfg.resample_batch, cfg.workers,
                            with_mu=True)
            p_shard = sampling_probabilities(mu.to(device), cfg.hist_bins, cfg.smoothing, world.all_reduce)
            p = world.all_gather_cat(p_shard).cpu().numpy()
            p = p / p.sum()  # float64 round-off only: rng.choice wants an exact sum of 1
            record["resampling"] = distribution_stats(torch.from_numpy(p))
        else:
            p = np.full(len(faces), 1.0 / len(faces))
        t1 = time.perf_counter()
        model.train()
        sums: dict[str, float] = {}
        batches = epoch_batches(rng, faces, non_faces, p, steps, cfg.batch_size, world)
        loader = batches_of(source, batches, cfg.workers)
        bar = tqdm(loader, total=steps, desc=f"{kind} {epoch + 1}/{cfg.epochs}",
                   disable=not (cfg.progress and world.is_main), leave=False)
        for step, (images, y) in enumerate(bar):
            if cfg.lr_schedule == "cosine":
                done = (epoch * steps + step) / total_steps
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * done))
            x = as_input(images, device)
            y = y.to(device)
            if cfg.augment:
                x = augment(x, cfg, gen, backgrounds=x[y == 0])
            if kind == "dbvae":
                losses = dbvae_loss(x, y, *model(x), kl_weight=cfg.kl_weight)
            else:
                losses = cnn_loss(y, model(x))
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            opt.step()
            for k in ("loss", "bce", "kl", "recon"):
                if k in losses:
                    sums[k] = sums.get(k, 0.0) + losses[k].item()
            bar.set_postfix(loss=f"{losses['loss'].item():.4f}")
        t2 = time.perf_counter()
        # Seconds on this rank (rank 0's are recorded); training images/s counts all ranks' images.
        record["seconds"] = {"resample": t1 - t0, "train": t2 - t1}
        record["train_images_per_s"] = steps * cfg.batch_size / (t2 - t1)
        keys = sorted(sums)
        mean = world.all_reduce(torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=device))
        record.update({k: float(v) / steps / world.world for k, v in zip(keys, mean)})
        history.append(record)
        if not world.is_main:
            world.barrier()  # rank 0 validates and checkpoints meanwhile
            continue
        prob = predict(net, source, val_idx, device, cfg.resample_batch, cfg.workers)
        val = binary_metrics(labels[val_idx], prob, cfg.threshold)
        record["val"] = val
        extra = ""
        if "resampling" in record:
            r = record["resampling"]
            extra = f" | resampling max/min {r['max_min_ratio']:.1f}, ESS {r['ess_fraction']:.2f}"
        log.info("%s epoch %d/%d loss %.4f val balanced acc %.3f auc %.3f%s", kind, epoch + 1, cfg.epochs,
                 record["loss"], val["balanced_accuracy"], val["roc_auc"], extra)
        save_checkpoint(ckpt_path, kind, net, opt, cfg, epoch + 1, history, {"val": val})
        world.barrier()
    if not val and history and "val" in history[-1]:
        val = history[-1]["val"]
    return net.eval(), {"history": history, "val": val}
