"""ONNX export (the contract with the service, training/contract.py) as library functions; the pipeline only
calls them.

Each graph is exported in eval mode with named inputs and outputs and a dynamic batch axis, checked
with onnx.checker, and verified against PyTorch with ONNX Runtime on fresh random inputs. Before export, two
rewrites give ONNX Runtime the same function with less work (fold_front_end, pad_narrow_blocks); parity is
always checked against the trained model itself.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from training.contract import GRAPH_IO, IMAGE_INPUT, MODEL_FILES, OPSET
from training.files import atomic_path
from training.model import DBVAE, ConvBlock, DecoderGraph, EncoderGraph, FaceCNN, FrontEnd

PARITY_ATOL = 1e-4


class ParityError(RuntimeError):
    pass


@contextlib.contextmanager
def quiet_exporter():
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
                 reference: torch.nn.Module | None = None, spatial_multiple: int = 0) -> float:
    """Export `module` to `path`; -> the max abs difference ORT vs PyTorch (raises ParityError above 1e-4).

    Parity is checked against `reference` when given: the trained model that `module` was folded from, on
    inputs of `example`'s shape. With `spatial_multiple`, height and width are dynamic too (multiples of it).
    """
    module = module.eval().cpu()
    if isinstance(reference, torch.nn.Module):
        reference = reference.eval().cpu()
    reference = reference or module
    dims = {0: torch.export.Dim("batch", min=1, max=4096)}
    if spatial_multiple:
        dims[2] = spatial_multiple * torch.export.Dim("h", min=1, max=1024)
        dims[3] = spatial_multiple * torch.export.Dim("w", min=1, max=1024)
    with torch.no_grad(), quiet_exporter():
        program = torch.onnx.export(module, (example,), input_names=[input_name], output_names=output_names,
                                    dynamic_shapes=(dims,), opset_version=OPSET, dynamo=True,
                                    external_data=False, verbose=False)
    with atomic_path(path) as tmp:
        program.save(str(tmp), external_data=False)
        onnx.checker.check_model(str(tmp), full_check=True)
        return check_parity(reference, tmp, input_name, output_names, example.shape[1:], parity_batches, seed)


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
        x = torch.rand((n, *item_shape), generator=g) if input_name == IMAGE_INPUT else \
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


def export_cnn(model: FaceCNN, out_dir: Path) -> dict:
    from training.localiser import export_scanner  # it builds on this module's rewrites

    files = MODEL_FILES["cnn"]
    name_in, names_out = GRAPH_IO["classifier"]
    example = torch.rand(2, 3, model.cfg.image_size, model.cfg.image_size)
    err = export_graph(for_export(model), example, out_dir / files["classifier"], name_in, list(names_out),
                       reference=model)
    err_scan = export_scanner(model, out_dir / files["scanner"])
    fast = export_fast(model, out_dir, files)
    return {"graphs": dict(files), "parity_max_abs_error": max(err, err_scan, fast["parity_max_abs_error"]),
            "fast_scan": fast}


def export_dbvae(model: DBVAE, out_dir: Path) -> dict:
    from training.localiser import export_scanner

    files = MODEL_FILES["dbvae"]
    s, d = model.cfg.image_size, model.cfg.latent_dim
    enc_in, enc_out = GRAPH_IO["encoder"]
    dec_in, dec_out = GRAPH_IO["decoder"]
    err_enc = export_graph(EncoderGraph(for_export(model)), torch.rand(2, 3, s, s), out_dir / files["encoder"],
                           enc_in, list(enc_out), reference=EncoderGraph(model))
    err_dec = export_graph(DecoderGraph(model), torch.randn(2, d), out_dir / files["decoder"], dec_in, list(dec_out))
    err_scan = export_scanner(model, out_dir / files["scanner"])
    fast = export_fast(model, out_dir, files)
    return {"graphs": dict(files), "parity_max_abs_error": max(err_enc, err_dec, err_scan, fast["parity_max_abs_error"]),
            "output_colour": "grey" if model.cfg.decoder_channels == 1 else "rgb", "fast_scan": fast}


def export_fast(model: FaceCNN | DBVAE, out_dir: Path, files: dict) -> dict:
    """The fast scan's two graphs (training/fast_scan.py), at the localiser's rank and margin."""
    from training.fast_scan import export_fast_scan
    from training.localiser import LocaliserConfig

    cfg = LocaliserConfig()
    return export_fast_scan(model, out_dir / files["fast_scan"], out_dir / files["window_head"],
                            cfg.fast_scan_rank, cfg.fast_scan_margin, cfg.scan_threshold)


EXPORTERS = {"cnn": export_cnn, "dbvae": export_dbvae}


# ---------------------------------------------------------------------------------------------
# Rewrites for ONNX Runtime: the same function, less work


def for_export(model: FaceCNN | DBVAE) -> FaceCNN | DBVAE:
    """The same function with less work for ONNX Runtime (see fold_front_end and pad_narrow_blocks);
    parity is always checked against the trained model itself."""
    return pad_narrow_blocks(fold_front_end(model))


def image_net(model: FaceCNN | DBVAE) -> nn.Sequential:
    """The stack from image to outputs: FaceCNN.net or the DB-VAE's encoder (front end, conv blocks, head)."""
    return model.net if isinstance(model, FaceCNN) else model.encoder


def fold_front_end(model: FaceCNN | DBVAE) -> FaceCNN | DBVAE:
    """A copy of `model` for export that does the same sums with less work.

    With a grey front end the first conv sees three equal channels, so conv(W, [g, g, g]) = conv(W.sum(1), g):
    the copy keeps the luma channel single and sums the first conv's weights over their input channels,
    a third of that conv's multiply-adds and none of the replication or of the 3-channel low-pass. Equal up
    to float rounding (export checks it against `model`); any other front end returns `model` itself.
    """
    if "grey" not in model.cfg.front_end:
        return model
    folded = copy.deepcopy(model).eval()
    net = image_net(folded)
    net[0] = FrontEnd(model.cfg.front_end, replicate=False)
    conv = net[1][0]  # the first ConvBlock's conv: weight [C_out, 3, k, k]
    folded_conv = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)
    with torch.no_grad():
        folded_conv.weight.copy_(conv.weight.sum(1, keepdim=True))  # [C_out, 1, k, k]
    net[1][0] = folded_conv
    return folded


def pad_narrow_blocks(model: FaceCNN | DBVAE, block: int = 16) -> FaceCNN | DBVAE:
    """A copy of `model` for export whose conv blocks narrower than `block` channels get zero filters up to
    `block`, with zero weights for them in the next conv: the same function, another memory layout on CPU.

    ONNX Runtime's x86 kernels keep conv outputs in channel blocks (NCHWc; 16 channels with AVX-512, 8 with
    AVX2), but a conv reading fewer channels than one block takes plain NCHW input, so the optimised graph
    un-blocks the 12-channel first block before the second conv: a reorder worth 5-15% of a batch-1 call on a
    2-core AVX-512 machine. Padded to one full block the convs chain without it. Only blocks followed by
    another conv are padded (the last one feeds the dense layer, whose weights are laid out per channel).
    """
    padded = copy.deepcopy(model).eval()
    net = image_net(padded)
    blocks = [m for m in net if isinstance(m, ConvBlock)]
    for this, nxt in zip(blocks, blocks[1:]):
        conv, bn, next_conv = this[0], this[1], nxt[0]
        extra = block - conv.out_channels
        if extra <= 0:
            continue
        with torch.no_grad():
            conv.weight = nn.Parameter(torch.cat([conv.weight, conv.weight.new_zeros(extra, *conv.weight.shape[1:])]))
            # A zero filter through batch norm with mean 0, var 1, scale 0, shift 0 stays 0, and so after ReLU.
            for name, fill in (("weight", 0.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
                t = getattr(bn, name)
                pad = torch.cat([t, t.new_full((extra,), fill)])
                setattr(bn, name, nn.Parameter(pad) if isinstance(t, nn.Parameter) else pad)
            w = next_conv.weight  # [C_next, C, k, k] -> [C_next, block, k, k]
            next_conv.weight = nn.Parameter(torch.cat([w, w.new_zeros(w.shape[0], extra, *w.shape[2:])], dim=1))
        conv.out_channels = bn.num_features = next_conv.in_channels = block
    return padded
