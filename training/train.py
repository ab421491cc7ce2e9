"""Training loops for the standard CNN and the DB-VAE, sharing one data pipeline.

Each epoch: (DB-VAE only) encode every training face in eval mode and recompute the sampling
probabilities; draw batches of half faces (by those probabilities, or uniformly for the CNN) and half
non-faces (uniformly); augment; step; validate on the held-out split; checkpoint. `train_step` is the
step itself, shared with the training benchmark (bench/training.py), so both time the same work.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from training.augment import appearance, geometry, light_view, misframe
from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.data.h5 import H5Source
from training.device_data import DeviceData, batch_generator, draw_batches, use_device_data
from training.distributed import Dist
from training.metrics import binary_metrics
from training.model import DBVAE, build_model, cnn_loss, dbvae_loss
from training.reconstruction import MAX_FACES, decoded_summary
from training.resampling import distribution_stats, sampling_probabilities
from training.step_options import Step, parse, prepare

log = logging.getLogger(__name__)

# Random streams, all derived from --seed. Batches: each model draws its own (the DB-VAE's resampled faces
# must not mirror the CNN's uniform ones). Augmentation: each rank its own, so ranks do not augment alike;
# after --resume the stream moves on by the epoch, so a resumed run does not repeat the first epochs' draws.
BATCH_STREAM = {"cnn": 0, "dbvae": 1}
AUGMENT_STREAM_PER_RANK = 1000
PROGRESS_EVERY = 20  # steps between the progress bar's loss readings (each one waits for the device)


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
            workers: int = 0, with_mu: bool = False, data: DeviceData | None = None):
    """Face probabilities [N] (and latent means [N, D] for the DB-VAE) in eval mode, batch by batch,
    so the whole set is never held as float32 at once; with `data`, the batches are cut from the set on the
    device instead of read from `source`. The caller's train/eval mode is restored."""
    was_training = model.training
    model.eval()
    probs, mus = [], []
    if data is not None:
        batches = data.chunks(indices, batch)
    else:
        batches = batches_of(source, [indices[i:i + batch] for i in range(0, len(indices), batch)], workers)
    for images, _ in batches:
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


# ---------------------------------------------------------------------------------------------
# One step


class Batch(NamedTuple):
    """One step's input: images x [B, 3, H, W], labels y [B] and the DB-VAE's reconstruction targets [B, 3, H, W].
    The last `vae_only` rows are a second view of the faces for the DB-VAE's reconstruction term alone."""

    x: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor
    vae_only: int = 0


def augment_batch(x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, gen: torch.Generator,
                  vae_view: bool = False) -> Batch:
    """The batch augmented, plus --misframed of its faces added again as non-faces, seen off-centre, too small or
    too large (augment.misframe), so that only a well-framed window scores as a face when the localiser scans a
    photo. The batch's own non-faces are the real scenes that zoomed-out faces and occluders are cut from.
    vae_view (the DB-VAE with --vae-view light): the batch's faces are appended once more in augment.light_view,
    each its own reconstruction target."""
    if not cfg.augment:
        return Batch(x, y, x)
    backgrounds = x[y == 0]
    faces = x[y == 1]
    extra = faces[: round(cfg.misframed * len(faces))]
    if len(extra):
        x = torch.cat([x, misframe(extra, gen, backgrounds)])
        y = torch.cat([y, y.new_zeros(len(extra))])
    framed = geometry(x, cfg, gen, backgrounds)
    x = appearance(framed, cfg, gen, backgrounds)
    # --recon-target clean: the decoder is asked for the face as framed, not for the occluders and noise on it.
    target = framed if cfg.recon_target == "clean" else x
    if not (vae_view and cfg.vae_view == "light" and len(faces)):
        return Batch(x, y, target)
    view = light_view(faces, cfg, gen, backgrounds)
    return Batch(torch.cat([x, view]), torch.cat([y, y.new_ones(len(view))]), torch.cat([target, view]), len(view))


def train_step(kind: str, model: torch.nn.Module, opt: torch.optim.Optimizer, batch: Batch, cfg: TrainConfig,
               done: float = 1.0) -> dict[str, torch.Tensor]:
    """Forward, loss, backward, optimiser step on one augmented batch; the DB-VAE reconstructs batch.target.
    `done`: the share of all training steps behind us (the KL warm-up). One forward pass over all rows, the
    second view's included, so DistributedDataParallel sees one forward per backward."""
    if kind == "dbvae":
        losses = dbvae_loss(batch.target, batch.y, *model(batch.x), kl_weight=kl_weight(cfg, done),
                            vae_only=batch.vae_only, vae_weight=cfg.vae_weight)
    else:
        n = len(batch.y) - batch.vae_only
        losses = cnn_loss(batch.y[:n], model(batch.x[:n]))
    opt.zero_grad(set_to_none=True)
    losses["loss"].backward()
    opt.step()
    return losses


def learning_rate(cfg: TrainConfig, done: float) -> float:
    """The learning rate after `done` (0..1) of all training steps."""
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * done)) if cfg.lr_schedule == "cosine" else cfg.lr


def kl_weight(cfg: TrainConfig, done: float) -> float:
    """c after `done` (0..1) of all training steps: 0 rising linearly to --kl-weight over the first --kl-warmup of
    them (Bowman et al. 2016, sec. 3.1), so the decoder learns to use the latent code before the KL term's pull
    towards the prior can collapse it to one mean face."""
    return cfg.kl_weight * (min(1.0, done / cfg.kl_warmup) if cfg.kl_warmup > 0 else 1.0)


def new_model(kind: str, cfg: TrainConfig, device: torch.device) -> torch.nn.Module:
    """The network `python -m training` trains, with the same initial weights on every rank."""
    torch.manual_seed(cfg.seed)
    return build_model(kind, cfg.model_config()).to(device)


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class Run:
    """What one model's training carries from epoch to epoch."""

    kind: str
    cfg: TrainConfig
    source: H5Source
    faces: np.ndarray
    non_faces: np.ndarray
    world: Dist
    device: torch.device
    net: torch.nn.Module
    step: Step  # what the step calls (net, in DistributedDataParallel and compiled where asked) and its optimiser
    rng: np.random.Generator
    gen: torch.Generator
    steps: int
    history: list[dict] = field(default_factory=list)
    data: DeviceData | None = None  # the set on the device (--data-on-device), else batches come from the loader

    @property
    def model(self) -> torch.nn.Module:
        return self.step.model

    @property
    def opt(self) -> torch.optim.Optimizer:
        return self.step.opt


def face_probabilities(run: Run) -> tuple[np.ndarray, dict | None]:
    """The epoch's sampling probability per training face [F] and, for the DB-VAE, how far it is from uniform.
    Each rank encodes its shard of the faces; the histograms are combined across ranks, so p is the
    distribution one process would compute over all faces."""
    if run.kind != "dbvae":
        return np.full(len(run.faces), 1.0 / len(run.faces)), None
    cfg, world = run.cfg, run.world
    _, mu = predict(run.net, run.source, world.shard(run.faces), run.device, cfg.resample_batch, cfg.workers,
                    with_mu=True, data=run.data)
    p_shard = sampling_probabilities(mu.to(run.device), cfg.hist_bins, cfg.smoothing, world.all_reduce)
    p = world.all_gather_cat(p_shard).cpu().numpy()
    p = p / p.sum()  # float64 round-off only: rng.choice wants an exact sum of 1
    return p, distribution_stats(torch.from_numpy(p))


def epoch_data(run: Run, epoch: int, p: np.ndarray):
    """The epoch's batches, (uint8 [B, H, W, 3], labels [B]) each: drawn and cut on the device with run.data,
    else drawn on the host and read by the DataLoader."""
    cfg, world = run.cfg, run.world
    if run.data is None:
        return batches_of(run.source, epoch_batches(run.rng, run.faces, run.non_faces, p, run.steps, cfg.batch_size,
                                                    world), cfg.workers)
    dev = run.data.device
    gen = batch_generator(dev, cfg.seed, BATCH_STREAM[run.kind], epoch)
    rows = draw_batches(gen, torch.from_numpy(run.faces).to(dev), torch.from_numpy(run.non_faces).to(dev),
                        torch.from_numpy(p).to(dev), run.steps, cfg.batch_size, world)  # [steps, B / world]
    return (run.data.batch(row) for row in rows)


def train_epoch(run: Run, epoch: int, p: np.ndarray) -> dict[str, float]:
    """One epoch of steps -> the mean of each loss term over all ranks' steps."""
    cfg, world = run.cfg, run.world
    run.model.train()
    sums: dict[str, torch.Tensor] = {}
    bar = tqdm(epoch_data(run, epoch, p), total=run.steps,
               desc=f"{run.kind} {epoch + 1}/{cfg.epochs}", disable=not (cfg.progress and world.is_main), leave=False)
    for step, (images, y) in enumerate(bar):
        done = (epoch * run.steps + step) / (cfg.epochs * run.steps)
        for group in run.opt.param_groups:
            group["lr"] = learning_rate(cfg, done)
        x, y = as_input(images, run.device), y.to(run.device)
        batch = augment_batch(x, y, cfg, run.gen, vae_view=run.kind == "dbvae")
        run.step.begin()
        with run.step.autocast():
            losses = train_step(run.kind, run.model, run.opt, batch._replace(x=run.step.input(batch.x)), cfg, done)
        for k in ("loss", "bce", "kl", "recon"):
            if k in losses:  # summed on the device in float64: a GPU never waits for the host between steps
                sums[k] = sums.get(k, 0.0) + losses[k].detach().double()
        if not bar.disable and step % PROGRESS_EVERY == 0:
            bar.set_postfix(loss=f"{losses['loss'].item():.4f}")
    keys = sorted(sums)
    total = world.all_reduce(torch.stack([sums[k] for k in keys]).to(run.device))
    return {k: float(v) / run.steps / world.world for k, v in zip(keys, total)}


def start(kind: str, cfg: TrainConfig, source: H5Source, train_idx: np.ndarray, world: Dist,
          device: torch.device) -> tuple[Run, int]:
    """A fresh run, or the one in the checkpoint with --resume -> (run, first epoch to train)."""
    net = new_model(kind, cfg, device)
    model = net
    if world.enabled:
        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    labels = source.labels
    step = prepare(net, model, cfg.lr, cfg.weight_decay, parse(cfg.step_options), device)
    run = Run(kind, cfg, source, train_idx[labels[train_idx] == 1], train_idx[labels[train_idx] == 0], world,
              device, net, step, np.random.default_rng(cfg.seed + BATCH_STREAM[kind]),
              torch.Generator(device=device).manual_seed(cfg.seed + AUGMENT_STREAM_PER_RANK * world.rank),
              cfg.steps_per_epoch or math.ceil(len(train_idx) / cfg.batch_size))
    if use_device_data(cfg.data_on_device, source, device):
        run.data = DeviceData.load(source, device)
    ckpt_path = Path(cfg.checkpoint_dir) / f"{kind}.pt"
    if not (cfg.resume and ckpt_path.is_file()):
        return run, 0
    ckpt = load_checkpoint(ckpt_path, map_location=device)[1]
    net.load_state_dict(ckpt.get("trained_model_state", ckpt["model_state"]))  # before any decoder tuning
    run.opt.load_state_dict(ckpt["optimizer_state"])
    run.history, epoch = ckpt["history"], ckpt["epoch"]
    run.rng = np.random.default_rng([cfg.seed, epoch])
    run.gen.manual_seed(cfg.seed + AUGMENT_STREAM_PER_RANK * world.rank + epoch)
    log.info("resumed %s from %s at epoch %d", kind, ckpt_path, epoch)
    return run, epoch


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
    run, first = start(kind, cfg, source, train_idx, world, device)
    val = {}
    for epoch in range(first, cfg.epochs):
        record: dict = {"epoch": epoch + 1}
        t0 = time.perf_counter()
        p, resampling = face_probabilities(run)
        if resampling is not None:
            record["resampling"] = resampling
        t1 = time.perf_counter()
        losses = train_epoch(run, epoch, p)
        t2 = time.perf_counter()
        # Seconds on this rank (rank 0's are recorded); training images/s counts all ranks' images.
        record["seconds"] = {"resample": t1 - t0, "train": t2 - t1}
        record["train_images_per_s"] = run.steps * cfg.batch_size / (t2 - t1)
        record.update(losses)
        run.history.append(record)
        if world.is_main:  # the other ranks wait at the barrier while rank 0 validates and checkpoints
            val = validate(run, val_idx, record)
        world.barrier()
    if not val and run.history and "val" in run.history[-1]:
        val = run.history[-1]["val"]
    run.net.to(memory_format=torch.contiguous_format)  # after --step-options channels_last: export as trained
    return run.net.eval(), {"history": run.history, "val": val}


@torch.no_grad()
def reconstruction_figures(net: DBVAE, source: H5Source, val_idx: np.ndarray, device: torch.device,
                           batch: int = 256) -> dict:
    """The held-out faces (at most reconstruction.MAX_FACES) against decode(mu) in eval mode."""
    faces_idx = val_idx[source.labels[val_idx] == 1][:MAX_FACES]
    if not len(faces_idx):
        return {"faces": 0}
    was_training = net.training
    net.eval()
    faces, mus = [], []
    for i in range(0, len(faces_idx), batch):
        images = torch.from_numpy(source.read(faces_idx[i:i + batch]))
        mus.append(net.encode(as_input(images, device))[1].cpu().numpy())  # [B, D]
        faces.append(images.numpy().astype(np.float32) / 255.0)
    decode = lambda z: net.decode(torch.from_numpy(z).to(device)).permute(0, 2, 3, 1).cpu().numpy()  # noqa: E731
    figures = decoded_summary(np.concatenate(faces), np.concatenate(mus), decode)  # [N, H, W, 3] from [M, D]
    net.train(was_training)
    return figures


def validate(run: Run, val_idx: np.ndarray, record: dict) -> dict:
    """Rank 0: held-out metrics into the epoch's record, a log line, the checkpoint. -> the metrics."""
    cfg = run.cfg
    prob = predict(run.net, run.source, val_idx, run.device, cfg.resample_batch, cfg.workers, data=run.data)
    val = binary_metrics(run.source.labels[val_idx], prob, cfg.threshold)
    if isinstance(run.net, DBVAE):
        val["reconstruction"] = reconstruction_figures(run.net, run.source, val_idx, run.device, cfg.resample_batch)
    record["val"] = val
    extra = ""
    if "resampling" in record:
        r = record["resampling"]
        extra = f" | resampling max/min {r['max_min_ratio']:.1f}, ESS {r['ess_fraction']:.2f}"
    if "reconstruction" in val:
        r = val["reconstruction"]
        extra += f" | recon PSNR {r['psnr_db']:.1f} dB, identified {r['identified_top1']:.2f}"
    log.info("%s epoch %d/%d loss %.4f val balanced acc %.3f auc %.3f%s", run.kind, record["epoch"], cfg.epochs,
             record["loss"], val["balanced_accuracy"], val["roc_auc"], extra)
    save_checkpoint(Path(cfg.checkpoint_dir) / f"{run.kind}.pt", run.kind, run.net, run.opt, cfg, record["epoch"],
                    run.history, {"val": val})
    return val
