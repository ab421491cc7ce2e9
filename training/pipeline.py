"""The whole of `python -m training`: open the data, train each model, export it, evaluate the exported files,
write the manifest once."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from training import distributed
from training.box_regression import add_box_heads
from training.checkpoint import save_tuned
from training.config import TrainConfig
from training.distributed import Dist
from training.data.h5 import H5Source
from training.data.sources import open_source, provenance, stratified_split
from training.decoder_tuning import tune_decoder, tuning_faces
from training.evaluation import evaluate_models
from training.fairness import CardConfig, CardInputs
from training.level_scan import add_level_scans
from training.export import EXPORTERS
from training.localiser import LocaliserConfig
from training.mining import mine
from training.manifest import write_manifest
from training.reporting import format_table
from training.train import reconstruction_figures, train_model

log = logging.getLogger("training")


def data_summary(cfg: TrainConfig, source: H5Source, train_idx, val_idx) -> dict:
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
        summary.update(builtin_non_faces=cfg.builtin_non_faces, builtin_faces=cfg.builtin_faces)
    if "dbvae" in cfg.model_list and cfg.tune_steps:
        summary["tune_faces"] = tuning_faces(cfg)
    return summary


def existing_entries(out_dir: Path, keep: list[str]) -> dict:
    """Manifest entries of models not retrained this run, kept while their files are still there."""
    path = out_dir / "manifest.json"
    if not path.is_file():
        return {}
    old = json.loads(path.read_text()).get("models", {})
    return {k: v for k, v in old.items() if k not in keep and all((out_dir / g).is_file() for g in v["graphs"].values())}


def open_data(cfg: TrainConfig, world: Dist) -> H5Source:
    """Rank 0 opens first, so a built-in or folder cache is built once, not by every rank at a time."""
    def _open():
        return open_source(cfg.source, h5=cfg.h5, faces=cfg.faces, non_faces=cfg.non_faces,
                           cache_dir=cfg.cache_dir, builtin_non_faces=cfg.builtin_non_faces, seed=cfg.seed,
                           builtin_faces=cfg.builtin_faces)

    source = _open() if world.is_main else None
    world.barrier()
    return source if source is not None else _open()


def train_all(cfg: TrainConfig, source: H5Source, train_idx: np.ndarray, val_idx: np.ndarray, world: Dist,
              device, out_dir: Path, entries: dict, tune: bool = True) -> None:
    """Train and (rank 0) export every model of --models; entries gets each one's manifest entry. tune: the DB-VAE's
    decoder tuning follows its training (rank 0; it never changes the scan graphs that mining uses)."""
    for kind in cfg.model_list:
        model, result = train_model(kind, cfg, source, train_idx, val_idx, world, device)
        if world.is_main:
            metrics = {"val_torch": result["val"], "history": result["history"]}
            if kind == "dbvae" and tune and cfg.tune_steps:
                model, metrics["decoder_tuning"] = tuned(model, cfg, source, train_idx, val_idx, device,
                                                         result["val"]["reconstruction"])
            exported = EXPORTERS[kind](model, out_dir)
            log.info("%s exported, ONNX Runtime vs PyTorch max abs error %.1e", kind, exported["parity_max_abs_error"])
            entries[kind] = {**exported, "threshold": cfg.threshold, "metrics": metrics}
        world.barrier()


def tuned(model, cfg: TrainConfig, source: H5Source, train_idx: np.ndarray, val_idx: np.ndarray, device,
          before: dict):
    """The DB-VAE after decoder tuning, put into checkpoints/dbvae.pt (checkpoint.save_tuned) -> (model, the
    tuning's record with the held-out reconstruction figures before (the last epoch's validation, `before`) and
    after)."""
    model, record = tune_decoder(model, cfg, source, train_idx, device)
    after = reconstruction_figures(model, source, val_idx, device, cfg.resample_batch)
    keys = ("psnr_db", "ssim", "correlation_own", "identified_top1", "morph_ends_identified")
    record["val_before"], record["val_after"] = ({k: r.get(k) for k in keys} for r in (before, after))
    save_tuned(Path(cfg.checkpoint_dir) / "dbvae.pt", model, record)
    return model, record


def run(cfg: TrainConfig) -> dict | None:
    """Train, export and evaluate; under torchrun only rank 0 exports and returns the manifest."""
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
        train_all(cfg, source, train_idx, val_idx, world, device, out_dir, entries, tune=cfg.mine_rounds == 0)
        given = (source, train_idx)  # before mining: the box heads fit on these, as training.box_regression does
        for round_ in range(1, cfg.mine_rounds + 1):
            # Hard negatives: the exported scan graphs' false alarms on face-free scenes, then every model again
            # from scratch with them among its training non-faces.
            mined = Path(cfg.checkpoint_dir) / f"mined-{round_}.h5"
            if world.is_main:
                graphs = [out_dir / entries[k]["graphs"]["scanner"] for k in cfg.model_list]
                data.setdefault("mined_non_faces", []).append(
                    mine(graphs, source, mined, LocaliserConfig(), builtin_look=cfg.source == "builtin"))
            world.barrier()
            grown = H5Source(mined, name=source.name)
            log.info("mining round %d/%d: %d training non-faces added", round_, cfg.mine_rounds,
                     len(grown) - len(source))
            train_idx = np.r_[train_idx, np.arange(len(source), len(grown))]
            source = grown
            train_all(replace(cfg, resume=False), source, train_idx, val_idx, world, device, out_dir, entries,
                      tune=round_ == cfg.mine_rounds)
    finally:
        distributed.shutdown()
    if not world.is_main:
        return None
    localiser = LocaliserConfig()
    add_level_scans(out_dir, entries, localiser.scan_threshold, localiser.fast_scan_margin)
    add_box_heads(out_dir, entries, *given, cfg.seed)
    # Evaluate the exported files themselves (ONNX Runtime), as the service will run them, before the manifest
    # is written: it is written once, whole, with these figures in it.
    card = CardInputs(CardConfig(resamples=cfg.fairness_resamples, seed=cfg.seed), cfg.hist_bins, cfg.smoothing,
                      {"evaluated": "the held-out validation split", "training_data": provenance(data)},
                      reference=(source, train_idx))
    evaluation = evaluate_models(out_dir, entries, source, val_idx, card)
    for kind, m in evaluation["models"].items():
        entries[kind]["fairness"] = m["fairness"]
        entries[kind]["metrics"]["val"] = {k: v for k, v in m.items() if k not in ("version", "threshold", "fairness")}
    manifest = write_manifest(out_dir, entries, cfg.latent_dim, data, {**cfg.to_dict(), "processes": world.world},
                              localiser.to_dict())
    print(f"\nValidation split ({data['val']['faces']} faces, {data['val']['non_faces']} non-faces), ONNX Runtime:")
    print(format_table(evaluation))
    print(f"models and manifest written to {out_dir}/")
    return manifest
