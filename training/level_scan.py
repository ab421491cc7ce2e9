"""The level scan: the fast scan's stage 1 (training/fast_scan.py) rebuilt for pyramid levels only, with no new
training (bench.localise measures the photos/s with it and without it). Two rewrites of the exported float32 ONNX graph:

1. Half resolution. A low-pass front end (training/model.py `FrontEnd`: a 2x2 mean, then bilinear up-sampling
   back to full size) hands the first conv a picture that holds half the resolution. The up-sampling and the
   first conv (5x5, stride 2) are both linear, so together they are one 4x4 conv of stride 1 on the half-size
   picture (`fold_half_resolution`). The level is then made at half the size (a quarter of the pixels to resize,
   copy and scan), and the graph reads it as it is. The map is the fast scan's exactly, but for the windows that
   touch the level's outermost half-size pixels: there the up-sampling clamps at the edge and the conv pads zeros.
   A graph without such a front end keeps its input scale of 1.
2. int8. ONNX Runtime's static quantisation (QDQ; int8 weights per output channel, uint8 activations), calibrated
   by min and max on real pictures: the face-free scenes and packaged faces the fast scan's rank is measured on
   (`fast_scan.calibration_levels`), none of the bench's photos. The integer convolutions use the CPU's dot-product
   instructions (AVX-512 VNNI here).

The level scan only decides which windows become candidates: the refining crops, the window head and the box head
keep the float32 fast scan, so every face's score is exactly what it was. `export_level_scan` measures what the
rewrite changes on the calibration pictures: the largest logit error near the candidate threshold, and the share
of the float32 fast scan's candidate windows (stage 2's logit at or above the threshold) the level scan keeps.

    python -m training.level_scan [--models DIR]

builds the level scans of a trained models directory from its fast-scan graphs; `python -m training` and
`python -m training.reexport` build them after every export.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader

from training.contract import LEVEL_SCAN_FILES, LEVEL_SCAN_GRAPH
from training.data.h5 import DataError
from training.fast_scan import logit

# Half-size pixel n of the up-sampled picture (align_corners=False, scale 2): full-size pixel 2m is
# 0.25 u[m-1] + 0.75 u[m], pixel 2m + 1 is 0.75 u[m] + 0.25 u[m+1] (u the half-size picture).
UPSAMPLE_TAPS = {0: ((-1, 0.25), (0, 0.75)), 1: ((0, 0.75), (1, 0.25))}
# Windows from a level's edge whose map a folded graph changes: the first conv's outermost output pixels differ,
# and the next three convs (stride 2 each) carry that into the first two feature positions, which the outermost two
# windows read (measured on the committed graphs: < 2e-5 from the third window in, up to 2.7 in the first).
EDGE_WINDOWS = 2


def fold_matrix(kernel: int, pad: int) -> tuple[np.ndarray, int, int]:
    """A stride-2 conv tap t (0..kernel-1) reads full-size pixel 2n + t - pad, a mix of half-size pixels around
    n -> (A [kernel, k'] with A[t, a] the weight of half-size pixel n + a - before, before, after): the folded
    conv's 1-D kernel is A's columns, k' = before + after + 1 taps, padded `before` and `after`."""
    reads = []
    for t in range(kernel):
        i = t - pad  # full-size offset from 2n
        m, parity = divmod(i, 2)
        reads.append([(m + d, w) for d, w in UPSAMPLE_TAPS[parity]])
    offsets = [o for taps in reads for o, _ in taps]
    before, after = -min(offsets), max(offsets)
    a = np.zeros((kernel, before + after + 1))
    for t, taps in enumerate(reads):
        for o, w in taps:
            a[t, o + before] += w
    return a, before, after


def attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def fold_half_resolution(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """The graph reading the half-size picture: its AveragePool (2x2, stride 2) -> Resize (bilinear, half_pixel)
    -> Conv (stride 2) on the input become one stride-1 conv (folded kernel, asymmetric pads) on the input; None
    where the graph does not start so."""
    graph = model.graph
    name_in = graph.input[0].name
    consumers = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    pool = next((n for n in consumers.get(name_in, []) if n.op_type == "AveragePool"), None)
    if pool is None or attributes(pool).get("kernel_shape") != [2, 2] or attributes(pool).get("strides") != [2, 2]:
        return None
    resize = next((n for n in consumers.get(pool.output[0], []) if n.op_type == "Resize"), None)
    if resize is None or any(n.op_type not in ("Resize", "Shape") for n in consumers[pool.output[0]]):
        return None  # a Shape reads the pool for the Resize's size: it goes with the Resize
    how = {k: v.decode() if isinstance(v, bytes) else v for k, v in attributes(resize).items()}
    if how.get("mode") != "linear" or how.get("coordinate_transformation_mode") != "half_pixel":
        return None
    conv = consumers.get(resize.output[0], [])
    if len(conv) != 1 or conv[0].op_type != "Conv":
        return None
    conv = conv[0]
    ca = attributes(conv)
    kernel, pads = ca["kernel_shape"], ca.get("pads", [0, 0, 0, 0])
    if ca.get("strides") != [2, 2] or ca.get("group", 1) != 1 or kernel[0] != kernel[1] or len(set(pads)) != 1:
        return None
    inits = {i.name: i for i in graph.initializer}
    weight = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)  # [C_out, C_in, k, k]
    a, before, after = fold_matrix(kernel[0], pads[0])
    folded = np.einsum("oikl,ka,lb->oiab", weight, a, a).astype(np.float32)  # [C_out, C_in, k', k']
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    name_w = conv.input[1] + "_half_resolution"
    node = helper.make_node("Conv", [name_in, name_w, *conv.input[2:]], list(conv.output), name="half_resolution_conv",
                            kernel_shape=list(folded.shape[2:]), pads=[before, before, after, after], strides=[1, 1])
    dropped = {pool.name, resize.name, conv.name}
    nodes = [n for n in g.node if n.name not in dropped]
    g.ClearField("node")
    g.node.extend([node, *nodes])
    g.initializer.append(numpy_helper.from_array(folded, name_w))
    prune(g)
    dims = g.input[0].type.tensor_type.shape.dim
    for d in dims[2:]:
        d.ClearField("dim_param")  # the export's "16*h": the half-size level is a multiple of 8
    onnx.checker.check_model(out)
    return out


def prune(graph: onnx.GraphProto) -> None:
    """Drop the nodes (the Resize's size computation) and initialisers nothing reads any more."""
    while True:
        read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    read = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in read]:
        graph.initializer.remove(init)


def half_size(level: np.ndarray) -> np.ndarray:
    """[1, C, H, W] (H, W even) -> its 2x2 means [1, C, H/2, W/2]: what the front end's pool makes of it."""
    n, c, h, w = level.shape
    return level.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5), dtype=np.float32)


class Levels(CalibrationDataReader):
    def __init__(self, name: str, levels: list[np.ndarray]):
        self.items = iter({name: x} for x in levels)

    def get_next(self) -> dict | None:
        return next(self.items, None)


def quantise(model: onnx.ModelProto, levels: list[np.ndarray], out: Path) -> None:
    """Static int8 quantisation of `model` (QDQ, per-channel weights), calibrated on `levels`, written to out."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        plain, prepared = Path(tmp) / "float.onnx", Path(tmp) / "prepared.onnx"
        onnx.save(model, plain)
        quant_pre_process(str(plain), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), Levels(model.graph.input[0].name, levels),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)


def compare(fast: Path, head: Path, level_scan: Path, input_scale: float, levels: list[np.ndarray],
            scan_threshold: float, margin: float) -> dict:
    """The level scan against the float32 fast scan, both through the window head, on full-size `levels`: the
    largest logit error over windows either puts within 2 x margin of the threshold, inside the level and in its
    EDGE_WINDOWS outermost rows and columns (a folded graph's inputs differ there: see the module's docstring),
    and the share of the candidate windows it keeps, edges included."""
    from training.localiser import FastGraphs, session

    fast_s, head_s, level_s = (session(p) for p in (fast, head, level_scan))
    # Both through the localiser's own two stages (luma or not only matters for cutting crops, not done here).
    plain, rebuilt = FastGraphs(fast_s, head_s, True), FastGraphs(fast_s, head_s, True, level_s, input_scale)
    thr = logit(scan_threshold)
    worst, candidates, kept, windows = {"inside": 0.0, "edges": 0.0}, 0, 0, 0
    for level in levels:
        exact = plain.logit_map(level, scan_threshold, margin)
        got = rebuilt.logit_map(half_size(level) if input_scale < 1 else level, scan_threshold, margin)
        windows += exact.size
        candidates += int((exact >= thr).sum())
        kept += int(((exact >= thr) & (got >= thr)).sum())
        near = np.maximum(exact, got) >= thr - 2 * margin
        inside = np.zeros_like(near)
        inside[EDGE_WINDOWS:-EDGE_WINDOWS, EDGE_WINDOWS:-EDGE_WINDOWS] = True
        for part, where in (("inside", near & inside), ("edges", near & ~inside)):
            if where.any():
                worst[part] = max(worst[part], float(np.abs(exact - got)[where].max()))
    return {"max_error_near_threshold": worst["inside"], "max_error_near_threshold_at_edges": worst["edges"],
            "windows": windows, "candidates": candidates, "candidates_kept": kept / max(candidates, 1)}


def export_level_scan(models_dir: Path, kind: str, entry: dict, scan_threshold: float, margin: float) -> dict:
    """A manifest entry's level scan, built from its fast-scan graph and written beside it -> its record; the
    entry's graphs gain it."""
    from training.fast_scan import calibration_levels

    graphs = entry["graphs"]
    if "fast_scan" not in entry:
        raise DataError(f"the {kind} model has no fast scan, which the level scan is built from: export it again")
    fast = models_dir / graphs["fast_scan"]
    model = onnx.load(str(fast))
    folded = fold_half_resolution(model)
    input_scale = 0.5 if folded is not None else 1.0
    channels = 1 if entry["fast_scan"]["input"] == "luma" else 3
    full = [x.numpy() for x in calibration_levels(channels)]  # sides multiples of 16
    calibration = [half_size(x) for x in full] if folded is not None else full
    file = LEVEL_SCAN_FILES[kind]
    quantise(folded if folded is not None else model, calibration, models_dir / file)
    measured = compare(fast, models_dir / graphs["window_head"], models_dir / file, input_scale, full,
                       scan_threshold, margin)
    graphs[LEVEL_SCAN_GRAPH] = file
    return {"input_scale": input_scale, "precision": "int8",
            "calibration_levels": len(full), **measured}


def add_level_scans(models_dir: Path, entries: dict, scan_threshold: float, margin: float) -> None:
    """Every model entry with a fast scan gets its level scan (graph and record)."""
    for kind, entry in entries.items():
        if "fast_scan" in entry:
            entry[LEVEL_SCAN_GRAPH] = export_level_scan(models_dir, kind, entry, scan_threshold, margin)


def rebuild(models_dir: Path) -> dict:
    """The level scans of a trained models directory built again -> the new manifest (everything else stays but
    the localiser entry, written anew as reexport does)."""
    from training.localiser import LocaliserConfig
    from training.manifest import load_manifest, write_manifest

    manifest, cfg = load_manifest(models_dir), LocaliserConfig()
    add_level_scans(models_dir, manifest["models"], cfg.scan_threshold, cfg.fast_scan_margin)
    return write_manifest(models_dir, manifest["models"], manifest["latent_dim"], manifest["data"],
                          manifest["training"], cfg.to_dict(), created=manifest.get("created"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.level_scan", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="models", help="the trained models' directory (default: models)")
    args = ap.parse_args(argv)
    try:
        manifest = rebuild(Path(args.models))
    except (DataError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for kind, entry in manifest["models"].items():
        if LEVEL_SCAN_GRAPH in entry:
            r = entry[LEVEL_SCAN_GRAPH]
            print(f"{kind}: level scan {entry['graphs'][LEVEL_SCAN_GRAPH]} (input scale {r['input_scale']}, "
                  f"{r['precision']}): keeps {r['candidates_kept']:.1%} of {r['candidates']} candidate windows, "
                  f"largest error near the threshold {r['max_error_near_threshold']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
