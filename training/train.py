"""Training loops for the standard CNN and the DB-VAE, sharing one data pipeline.

Each epoch: (DB-VAE only) encode every training face in eval mode and recompute the sampling
probabilities; draw batches of half faces (by those probabilities, or uniformly for the CNN) and half
non-faces (uniformly); augment; step; validate on the held-out split; checkpoint.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from training.augment import augment
from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.data.h5 import H5Source
from training.data.image import to_model_input
from training.metrics import binary_metrics
from training.model import DBVAE, ModelConfig, build_model, cnn_loss, dbvae_loss
from training.resampling import distribution_stats, sampling_probabilities

log = logging.getLogger(__name__)


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but PyTorch sees no CUDA device")
    return torch.device(name)


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
    """uint8 [B, H, W, 3] -> float [B, 3, H, W] in [0, 1]: the exact tensors the exported graphs take."""
    return torch.from_numpy(to_model_input(images_u8.numpy())).to(device)


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
                  steps: int, batch: int) -> list[np.ndarray]:
    half = batch // 2
    f = rng.choice(faces, size=(steps, half), replace=True, p=p_faces)
    n = rng.choice(non_faces, size=(steps, batch - half), replace=True)
    return list(np.concatenate([f, n], axis=1))


def train_model(kind: str, cfg: TrainConfig, source: H5Source, train_idx: np.ndarray,
                val_idx: np.ndarray) -> tuple[torch.nn.Module, dict]:
    """Train one model; -> (model in eval mode, {"history": [...], "val": metrics, "resampling": [...]})."""
    device = select_device(cfg.device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed + (0 if kind == "cnn" else 1))
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    model = build_model(kind, ModelConfig(latent_dim=cfg.latent_dim, dropout=cfg.dropout, front_end=cfg.model_front_end)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.steps_per_epoch or math.ceil(len(train_idx) / cfg.batch_size)
    total_steps = cfg.epochs * steps
    ckpt_path = Path(cfg.checkpoint_dir) / f"{kind}.pt"

    history, start = [], 0
    if cfg.resume and ckpt_path.is_file():
        resumed, ckpt = load_checkpoint(ckpt_path, map_location=device)
        model.load_state_dict(resumed.state_dict())
        opt.load_state_dict(ckpt["optimizer_state"])
        history, start = ckpt["history"], ckpt["epoch"]
        rng = np.random.default_rng([cfg.seed, start])
        gen.manual_seed(cfg.seed + start)
        log.info("resumed %s from %s at epoch %d", kind, ckpt_path, start)

    labels = source.labels
    faces, non_faces = train_idx[labels[train_idx] == 1], train_idx[labels[train_idx] == 0]
    val = {}
    for epoch in range(start, cfg.epochs):
        record: dict = {"epoch": epoch + 1}
        if kind == "dbvae":
            _, mu = predict(model, source, faces, device, cfg.resample_batch, cfg.workers, with_mu=True)
            p = sampling_probabilities(mu, cfg.hist_bins, cfg.smoothing).numpy()
            record["resampling"] = distribution_stats(torch.from_numpy(p))
        else:
            p = np.full(len(faces), 1.0 / len(faces))
        model.train()
        sums: dict[str, float] = {}
        loader = batches_of(source, epoch_batches(rng, faces, non_faces, p, steps, cfg.batch_size), cfg.workers)
        bar = tqdm(loader, total=steps, desc=f"{kind} {epoch + 1}/{cfg.epochs}", disable=not cfg.progress,
                   leave=False)
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
        record.update({k: v / steps for k, v in sums.items()})
        prob = predict(model, source, val_idx, device, cfg.resample_batch, cfg.workers)
        val = binary_metrics(labels[val_idx], prob, cfg.threshold)
        record["val"] = val
        history.append(record)
        extra = ""
        if "resampling" in record:
            r = record["resampling"]
            extra = f" | resampling max/min {r['max_min_ratio']:.1f}, ESS {r['ess_fraction']:.2f}"
        log.info("%s epoch %d/%d loss %.4f val balanced acc %.3f auc %.3f%s", kind, epoch + 1, cfg.epochs,
                 record["loss"], val["balanced_accuracy"], val["roc_auc"], extra)
        save_checkpoint(ckpt_path, kind, model, opt, cfg, epoch + 1, history, {"val": val})
    if not val and history:
        val = history[-1]["val"]
    return model.eval(), {"history": history, "val": val}
