"""Decoder tuning: after the DB-VAE has trained, its VAE half trains on more faces, and its classifier not at all.

Why. The DB-VAE's encoder is shared: one trunk and one dense head give the face logit and the latent Gaussian.
Its reconstruction of a face it never saw is only as good as the faces it trained on, and the built-in set has 80.
Training on more faces in the main loop (the 747 packaged ones as extra reconstruction rows) was measured: better
reconstructions of faces from outside the repo, but the shared features moved and the localiser's recall on the
photo set fell from 0.883 to 0.777. So the extra faces come afterwards, here, where they cannot move the logit:

1. mu and log sigma^2 get their own dense layers on the conv features (DBVAE.branch_latent), copies of the
   shared head's, so the model starts out computing exactly what it did;
2. the conv trunk and the classifier's head are frozen (eval mode: batch norm and dropout as at inference);
3. the branch and the decoder train on the VAE loss alone, c * KL + L1 (Kingma & Welling 2014; the DB-VAE's
   face term, Amini et al. 2019, eq. 4), on the training faces and, with --tune-faces packaged, as many packaged
   faces a batch (training/data/packaged.py, in the built-in look), all in augment.light_view, as face crops are
   framed.

The face logit, and with it everything the classifier and the localiser compute, is bit for bit the same
(tests/test_training_decoder_tuning.py). The encoder's latent is then no longer the one the resampling
histogrammed during training; the fairness card's rarity is taken in the tuned latent space.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from training.augment import light_view
from training.config import TrainConfig
from training.data.builtin import packaged_low_res
from training.data.h5 import H5Source
from training.model import DBVAE, kl_loss, reconstruction_loss
from training.train import as_input

log = logging.getLogger(__name__)

TUNE_STREAM = 2  # its random stream, after the two models' batch streams (train.BATCH_STREAM)


def tuning_faces(cfg: TrainConfig) -> str:
    """--tune-faces with auto resolved: packaged for the built-in set (the packaged faces are cut in its look)."""
    if cfg.tune_faces == "auto":
        return "packaged" if cfg.source == "builtin" else "train"
    return cfg.tune_faces


def tune_decoder(model: DBVAE, cfg: TrainConfig, source: H5Source, train_idx: np.ndarray,
                 device: torch.device) -> tuple[DBVAE, dict]:
    """Tune `model` in place (cfg.tune_steps >= 1 steps) -> (the model in eval mode, a record of the tuning)."""
    if cfg.tune_steps < 1:
        raise ValueError("decoder tuning needs --tune-steps >= 1")
    faces = torch.from_numpy(source.read(np.sort(train_idx[source.labels[train_idx] == 1]))).to(device)  # uint8 [F, H, W, 3]
    pool = torch.from_numpy(packaged_low_res()[0]).to(device) if tuning_faces(cfg) == "packaged" else None
    model.branch_latent()
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    params = [p for m in (model.latent, model.decoder_in, model.decoder_conv) for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=cfg.tune_lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + TUNE_STREAM)
    half = cfg.batch_size // 2
    losses = []
    for step in range(cfg.tune_steps):
        for group in opt.param_groups:  # cosine to 0, as the main loop's default schedule
            group["lr"] = cfg.tune_lr * 0.5 * (1 + math.cos(math.pi * step / cfg.tune_steps))
        drawn = faces[torch.randint(len(faces), (cfg.batch_size if pool is None else half,), generator=gen,
                                    device=device)]
        if pool is not None:
            drawn = torch.cat([drawn, pool[torch.randint(len(pool), (half,), generator=gen, device=device)]])
        x = light_view(as_input(drawn, device), cfg, gen)  # [B, 3, 64, 64]
        model.train()
        model.encoder.eval()  # frozen: batch norm keeps its running statistics, dropout is off
        _, mu, logvar = model.encode(x)
        loss = (cfg.kl_weight * kl_loss(mu, logvar) + reconstruction_loss(x, model.decode(model.reparameterize(mu, logvar)))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    tenth = max(1, len(losses) // 10)
    record = {"steps": cfg.tune_steps, "lr": cfg.tune_lr, "faces": tuning_faces(cfg), "training_faces": len(faces),
              "packaged_faces": 0 if pool is None else len(pool),
              "loss_first_last_tenth": [float(np.mean(losses[:tenth])), float(np.mean(losses[-tenth:]))]}
    log.info("dbvae decoder tuning: %d steps on %d training faces%s, loss %.4f -> %.4f", cfg.tune_steps, len(faces),
             "" if pool is None else f" + {len(pool)} packaged", *record["loss_first_last_tenth"])
    return model.eval(), record
