"""ONNX export (the contract with the service) as library functions; the CLI only calls them.

Each graph is exported in eval mode with named inputs and outputs and a dynamic batch axis, checked
with onnx.checker, and verified against PyTorch with ONNX Runtime on fresh random inputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import warnings
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from training.model import DBVAE, DecoderGraph, EncoderGraph, FaceCNN, fold_front_end, pad_narrow_blocks

OPSET = 18
PARITY_ATOL = 1e-4
MANIFEST_VERSION = 1


class ParityError(RuntimeError):
    pass


@contextlib.contextmanager
def _quiet_exporter():
    """The dynamo exporter logs progress lines and torchvision notices on every call; keep the CLI readable."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx._internal.exporter._registration", "onnx_ir", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_graph(module: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str,
                 output_names: list[str], parity_batches: tuple[int, ...] = (1, 7), seed: int = 0,
                 reference: torch.nn.Module | None = None) -> float:
    """Export `module` to `path`; -> the max abs difference ORT vs PyTorch (raises ParityError above 1e-4).

    Parity is checked against `reference` when given: the trained model that `module` was folded from.
    """
    module = module.eval().cpu()
    reference = (reference or module).eval().cpu()
    batch = torch.export.Dim("batch", min=1, max=4096)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.onnx")
    with torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(module, (example,), input_names=[input_name], output_names=output_names,
                                    dynamic_shapes=({0: batch},), opset_version=OPSET, dynamo=True,
                                    external_data=False, verbose=False)
    program.save(str(tmp), external_data=False)
    onnx.checker.check_model(str(tmp), full_check=True)
    err = check_parity(reference, tmp, input_name, output_names, example.shape[1:], parity_batches, seed)
    os.replace(tmp, path)
    return err


def check_parity(module, path: Path, input_name: str, output_names: list[str], item_shape,
                 batches=(1, 7), seed: int = 0) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got_names = [o.name for o in session.get_outputs()]
    if got_names != output_names or session.get_inputs()[0].name != input_name:
        raise ParityError(f"{path.name}: graph signature {session.get_inputs()[0].name} -> {got_names}, "
                          f"expected {input_name} -> {output_names}")
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for n in batches:
        x = torch.rand((n, *item_shape), generator=g) if input_name == "image" else \
            torch.randn((n, *item_shape), generator=g)
        with torch.no_grad():
            expected = module(x)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = session.run(output_names, {input_name: x.numpy()})
        for name, e, o in zip(output_names, expected, got):
            if tuple(o.shape) != tuple(e.shape):
                raise ParityError(f"{path.name}: output {name} has shape {o.shape}, PyTorch gives {tuple(e.shape)}")
            worst = max(worst, float(np.abs(o - e.numpy()).max()))
    if worst > PARITY_ATOL:
        raise ParityError(f"{path.name}: ONNX Runtime differs from PyTorch by {worst:.2e} (> {PARITY_ATOL:.0e})")
    return worst


def for_export(model: FaceCNN | DBVAE) -> FaceCNN | DBVAE:
    """The same function with less work for ONNX Runtime (see fold_front_end and pad_narrow_blocks);
    parity is always checked against the trained model itself."""
    return pad_narrow_blocks(fold_front_end(model))


def export_cnn(model: FaceCNN, out_dir: Path) -> dict:
    example = torch.rand(2, 3, model.cfg.image_size, model.cfg.image_size)
    err = export_graph(for_export(model), example, out_dir / "cnn.onnx", "image", ["logit"], reference=model)
    return {"graphs": {"classifier": "cnn.onnx"}, "parity_max_abs_error": err}


def export_dbvae(model: DBVAE, out_dir: Path) -> dict:
    s, d = model.cfg.image_size, model.cfg.latent_dim
    err_enc = export_graph(EncoderGraph(for_export(model)), torch.rand(2, 3, s, s), out_dir / "dbvae_encoder.onnx",
                           "image", ["logit", "mu", "logvar"], reference=EncoderGraph(model))
    err_dec = export_graph(DecoderGraph(model), torch.randn(2, d), out_dir / "dbvae_decoder.onnx", "z", ["image"])
    return {"graphs": {"encoder": "dbvae_encoder.onnx", "decoder": "dbvae_decoder.onnx"},
            "parity_max_abs_error": max(err_enc, err_dec)}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def library_versions() -> dict:
    import h5py
    import PIL

    return {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": ort.__version__, "numpy": np.__version__, "pillow": PIL.__version__,
            "h5py": h5py.__version__}


def write_manifest(out_dir: Path, models: dict, latent_dim: int, image_size: int, data: dict,
                   training: dict) -> dict:
    """models: {"cnn": {"graphs": ..., "threshold": ..., "metrics": ...}, "dbvae": {...}}."""
    files = {}
    for entry in models.values():
        for fname in entry["graphs"].values():
            p = out_dir / fname
            files[fname] = {"sha256": sha256(p), "bytes": p.stat().st_size}
    for kind, entry in models.items():
        digest = hashlib.sha256("".join(files[f]["sha256"] for f in entry["graphs"].values()).encode())
        entry["version"] = f"{kind}-{digest.hexdigest()[:8]}"
    manifest = {
        "format_version": MANIFEST_VERSION,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "input": {"name": "image", "layout": "NCHW", "channels": 3, "size": image_size, "channel_order": "RGB",
                  "dtype": "float32", "range": [0.0, 1.0],
                  "preprocess": ["decode_jpeg_draft_2x", "exif_transpose", "to_rgb", "centre_square_crop",
                                 f"resize_bilinear_{image_size}", "scale_1_255"]},
        "latent_dim": latent_dim,
        "models": models,
        "files": files,
        "data": data,
        "training": training,
        "versions": library_versions(),
    }
    tmp = out_dir / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, out_dir / "manifest.json")
    return manifest
