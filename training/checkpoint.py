"""Checkpoints: state_dict + model config + training config + metrics, written atomically."""

from __future__ import annotations

from pathlib import Path

import torch

from training.config import TrainConfig
from training.files import atomic_path
from training.model import ModelConfig, build_model


def save_checkpoint(path: Path, kind: str, model, optimizer, cfg: TrainConfig, epoch: int,
                    history: list[dict], metrics: dict) -> None:
    state = {
        "kind": kind,
        "model_state": model.state_dict(),
        "model_config": model.cfg.to_dict(),
        "train_config": cfg.to_dict(),
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "epoch": epoch,
        "history": history,
        "metrics": metrics,
    }
    with atomic_path(path) as tmp:  # a crash mid-write never leaves a truncated checkpoint behind
        torch.save(state, tmp)


def save_tuned(path: Path, model, record: dict) -> None:
    """Put the DB-VAE after decoder tuning (training/decoder_tuning.py) into its training's checkpoint: the model
    there is then the exported one; the state it trained to stays as trained_model_state, for --resume."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    ckpt.setdefault("trained_model_state", ckpt["model_state"])
    ckpt.update(model_state=model.state_dict(), model_config=model.cfg.to_dict())
    ckpt["metrics"] = {**ckpt["metrics"], "decoder_tuning": record}
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)


def load_checkpoint(path: Path, map_location="cpu"):
    """-> (model in eval mode, the checkpoint dict)."""
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    model = build_model(ckpt["kind"], ModelConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model_state"])
    return model.eval(), ckpt
