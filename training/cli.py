"""`python -m training`: train the CNN and the DB-VAE, export them to ONNX with a manifest, evaluate.

    python -m training                                   # built-in data set, a few minutes on a CPU
    python -m training --source h5 --h5 train_face.h5    # the MIT 6.S191 lab file
    python -m training --source folders --faces img_align_celeba/ --non-faces imagenet/
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import MISSING, fields
from pathlib import Path

import torch.distributed

from training import distributed
from training.config import TrainConfig
from training.distributed import Dist
from training.data.h5 import DataError
from training.data.sources import open_source, stratified_split

log = logging.getLogger("training")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        help_ = f"{f.metadata.get('help', '')} (default: {default})"
        if isinstance(default, bool):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_)
        else:
            ap.add_argument(flag, type=type(default), default=default, help=help_)
    return ap


def data_summary(cfg: TrainConfig, source, train_idx, val_idx) -> dict:
    y = source.labels
    summary = {"source": cfg.source, "seed": cfg.seed, "val_fraction": cfg.val_fraction,
               "train": {"faces": int(y[train_idx].sum()), "non_faces": int(len(train_idx) - y[train_idx].sum())},
               "val": {"faces": int(y[val_idx].sum()), "non_faces": int(len(val_idx) - y[val_idx].sum())}}
    if cfg.source == "h5":
        summary["path"] = str(Path(cfg.h5).resolve())
    elif cfg.source == "folders":
        summary.update(faces=str(Path(cfg.faces).resolve()), non_faces=str(Path(cfg.non_faces).resolve()),
                       skipped_unreadable=getattr(source, "skipped", 0))
    else:
        summary["builtin_non_faces"] = cfg.builtin_non_faces
    return summary


def existing_entries(out_dir: Path, keep: list[str]) -> dict:
    """Manifest entries of models not retrained this run, kept while their files are still there."""
    path = out_dir / "manifest.json"
    if not path.is_file():
        return {}
    old = json.loads(path.read_text()).get("models", {})
    return {k: v for k, v in old.items() if k not in keep and all((out_dir / g).is_file() for g in v["graphs"].values())}


def open_data(cfg: TrainConfig, world: Dist):
    """Rank 0 opens first, so a built-in or folder cache is built once, not by every rank at a time."""
    def _open():
        return open_source(cfg.source, h5=cfg.h5, faces=cfg.faces, non_faces=cfg.non_faces,
                           cache_dir=cfg.cache_dir, builtin_non_faces=cfg.builtin_non_faces, seed=cfg.seed)

    source = _open() if world.is_main else None
    world.barrier()
    return source if source is not None else _open()


def run(cfg: TrainConfig) -> dict | None:
    """Train, export and evaluate; under torchrun only rank 0 exports and returns the manifest."""
    from training.evaluate import evaluate_models, format_table
    from training.export import export_cnn, export_dbvae, write_manifest
    from training.train import train_model

    world = distributed.from_environment()
    device = distributed.device_for(world, cfg.device)
    distributed.init(world, device, cfg.dist_timeout)
    try:
        source = open_data(cfg, world)
        if getattr(source, "skipped", 0):
            log.warning("skipped %d unreadable image file(s)", source.skipped)
        train_idx, val_idx = stratified_split(source.labels, cfg.val_fraction, cfg.seed)
        data = data_summary(cfg, source, train_idx, val_idx)
        log.info("data: %s%s", json.dumps({k: data[k] for k in ("source", "train", "val")}),
                 f" | {world.world} processes, {device}" if world.enabled else "")
        out_dir = Path(cfg.out_dir)
        entries = existing_entries(out_dir, cfg.model_list) if world.is_main else {}
        for kind in cfg.model_list:
            model, result = train_model(kind, cfg, source, train_idx, val_idx, world, device)
            if world.is_main:
                exported = export_cnn(model, out_dir) if kind == "cnn" else export_dbvae(model, out_dir)
                log.info("%s exported, ONNX Runtime vs PyTorch max abs error %.1e", kind,
                         exported["parity_max_abs_error"])
                entries[kind] = {**exported, "threshold": cfg.threshold,
                                 "metrics": {"val_torch": result["val"], "history": result["history"]}}
            world.barrier()
    finally:
        distributed.shutdown()
    if not world.is_main:
        return None
    manifest = write_manifest(out_dir, entries, cfg.latent_dim, 64, data, {**cfg.to_dict(), "processes": world.world})

    # Evaluate the exported files themselves (ONNX Runtime), as the service will run them.
    evaluation = evaluate_models(out_dir, manifest, source, val_idx)
    for kind, m in evaluation["models"].items():
        manifest["models"][kind]["metrics"]["val"] = {k: v for k, v in m.items() if k not in ("version", "threshold")}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"\nValidation split ({data['val']['faces']} faces, {data['val']['non_faces']} non-faces), ONNX Runtime:")
    print(format_table(evaluation))
    print(f"models and manifest written to {out_dir}/")
    return manifest


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO if distributed.from_environment().is_main else logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        cfg = TrainConfig(**vars(args))
        run(cfg)
    except (DataError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (torch.distributed.DistError, RuntimeError) as exc:
        if not distributed.from_environment().enabled:
            raise
        # Under torchrun a peer that died or a collective that timed out surfaces here, on every rank.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: distributed training stopped: another process failed or timed out ({first}); "
              f"rerun with --resume to continue from the last checkpoint", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted: the last completed epoch is in the checkpoint (--resume continues)", file=sys.stderr)
        return 130
    return 0
