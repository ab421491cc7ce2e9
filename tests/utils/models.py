"""Small, untrained but real ONNX graphs that follow the model contract, plus their manifest.

The service tests run against these, so they do not depend on training having run. The weights are
seeded, the graphs tiny, and the DB-VAE's decoder is the pseudo-inverse of its encoder, so a
reconstruction resembles (a low-rank projection of) its input.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SIZE = 64
LATENT_DIM = 8
OPSET = 17
POOL = 8  # the DB-VAE fixture sees the image as 8x8 blocks
FLAT = 3 * (SIZE // POOL) ** 2


def _model(nodes, inputs, outputs, inits, name) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tests.utils")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _image_input():
    return helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])


def cnn(rng: np.random.Generator) -> onnx.ModelProto:
    inits = {
        "conv_w": (rng.standard_normal((4, 3, 3, 3)) * 0.5).astype(np.float32),
        "conv_b": np.zeros(4, np.float32),
        "fc_w": (rng.standard_normal((4, 1)) * 4.0).astype(np.float32),
        "fc_b": np.array([-3.0], np.float32),
        "flat": np.array([-1], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["image", "conv_w", "conv_b"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["l"]),
        helper.make_node("Reshape", ["l", "flat"], ["logit"]),
    ]
    out = [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N"])]
    return _model(nodes, [_image_input()], out, inits, "cnn")


def dbvae(rng: np.random.Generator) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    w_mu = (rng.standard_normal((FLAT, LATENT_DIM)) / np.sqrt(FLAT) * 4).astype(np.float32)
    enc = {
        "w_mu": w_mu,
        "b_mu": (-0.5 * w_mu.sum(axis=0)).astype(np.float32),  # centre pixels on 0.5
        "w_lv": (rng.standard_normal((FLAT, LATENT_DIM)) * 0.01).astype(np.float32),
        "b_lv": np.full(LATENT_DIM, -1.0, np.float32),
        "w_l": (rng.standard_normal((FLAT, 1)) / np.sqrt(FLAT) * 6).astype(np.float32),
        "b_l": np.array([0.0], np.float32),
        "flat": np.array([-1], np.int64),
    }
    enc_nodes = [
        helper.make_node("AveragePool", ["image"], ["p"], kernel_shape=[POOL, POOL], strides=[POOL, POOL]),
        helper.make_node("Flatten", ["p"], ["x"]),
        helper.make_node("Gemm", ["x", "w_mu", "b_mu"], ["mu"]),
        helper.make_node("Gemm", ["x", "w_lv", "b_lv"], ["logvar"]),
        helper.make_node("Gemm", ["x", "w_l", "b_l"], ["l"]),
        helper.make_node("Reshape", ["l", "flat"], ["logit"]),
    ]
    enc_out = [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N"]),
               helper.make_tensor_value_info("mu", TensorProto.FLOAT, ["N", LATENT_DIM]),
               helper.make_tensor_value_info("logvar", TensorProto.FLOAT, ["N", LATENT_DIM])]
    encoder = _model(enc_nodes, [_image_input()], enc_out, enc, "dbvae_encoder")

    dec = {
        "w_d": np.linalg.pinv(w_mu).astype(np.float32),
        "b_d": np.full(FLAT, 0.5, np.float32),
        "lo": np.array(0.0, np.float32),
        "hi": np.array(1.0, np.float32),
        "blocks": np.array([-1, 3, SIZE // POOL, SIZE // POOL], np.int64),
        "scales": np.array([1, 1, POOL, POOL], np.float32),
    }
    dec_nodes = [
        helper.make_node("Gemm", ["z", "w_d", "b_d"], ["y"]),
        helper.make_node("Clip", ["y", "lo", "hi"], ["c"]),
        helper.make_node("Reshape", ["c", "blocks"], ["s"]),
        helper.make_node("Resize", ["s", "", "scales"], ["image"], mode="nearest"),
    ]
    dec_in = [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", LATENT_DIM])]
    dec_out = [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])]
    return encoder, _model(dec_nodes, dec_in, dec_out, dec, "dbvae_decoder")


def scanner(name: str) -> onnx.ModelProto:
    """A scan graph that honours the contract (image [N, 3, H, W] -> logit_map [N, H/16-3, W/16-3]): one 64x64
    conv at stride 16 that scores a window by how bright it is all over, logit = 60 (mean - 0.9). A bright
    square exactly filling a window scores sigmoid(6) = 0.998; the same window moved by 16 px off it, or a
    window around a smaller square, scores below 0.001: a detector whose right answer a test can state."""
    w = np.full((1, 3, SIZE, SIZE), 60.0 / (3 * SIZE * SIZE), np.float32)
    inits = {"w_scan": w, "b_scan": np.array([-54.0], np.float32), "axes": np.array([1], np.int64)}
    nodes = [helper.make_node("Conv", ["image", "w_scan", "b_scan"], ["c"], strides=[16, 16]),
             helper.make_node("Squeeze", ["c", "axes"], ["logit_map"])]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])
    out = [helper.make_tensor_value_info("logit_map", TensorProto.FLOAT, ["N", "h", "w"])]
    return _model(nodes, [image], out, inits, name)


# min_face_size 64: the fixture scanner's bright squares are found at the first pyramid level, at scale 1.
LOCALISER = {"window": SIZE, "stride": 16, "scale_step": 2 ** 0.25, "min_face_size": 64, "nms_iou": 0.3,
             "scan_threshold": 0.9, "threshold": 0.9, "max_faces": 100, "min_neighbours": 1,
             "refine_shifts": [0.0, -0.1, 0.1], "refine_scales": [1.0, 0.9, 1.1], "crop_max_side": 2 * SIZE,
             "nested_overlap": 0.6}


def write_manifest(models_dir: Path, *, thresholds: tuple[float, float] = (0.5, 0.5), **overrides) -> dict:
    """manifest.json for whatever .onnx files are in models_dir, hashed as they are now."""
    files = {p.name: {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "bytes": p.stat().st_size}
             for p in sorted(models_dir.glob("*.onnx"))}
    manifest = {
        "format_version": 1,
        "created": "2026-11-28T16:00:00Z",
        "input": {"name": "image", "layout": "NCHW", "channels": 3, "size": SIZE, "channel_order": "RGB",
                  "dtype": "float32", "range": [0.0, 1.0],
                  "preprocess": ["decode_jpeg_draft_2x", "exif_transpose", "to_rgb", "centre_square_crop",
                                 "resize_bilinear_64", "scale_1_255"]},
        "latent_dim": LATENT_DIM,
        "localiser": LOCALISER,
        "models": {
            "cnn": {"version": "cnn-test0001", "threshold": thresholds[0],
                    "graphs": {"classifier": "cnn.onnx", "scanner": "cnn_scan.onnx"},
                    "metrics": {"val": {"accuracy": 0.5, "roc_auc": 0.5}}},
            "dbvae": {"version": "dbvae-test0001", "threshold": thresholds[1],
                      "graphs": {"encoder": "dbvae_encoder.onnx", "decoder": "dbvae_decoder.onnx",
                                 "scanner": "dbvae_scan.onnx"},
                      "metrics": {"val": {"accuracy": 0.5, "roc_auc": 0.5}}},
        },
        "files": files,
        "data": {"source": "tests", "train": {"faces": 0, "non_faces": 0}, "val": {"faces": 0, "non_faces": 0}},
        "training": {},
        "versions": {"onnx": onnx.__version__},
    }
    manifest.update(overrides)
    (models_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def build_models(models_dir: Path, seed: int = 0) -> Path:
    """Write cnn.onnx, dbvae_encoder.onnx, dbvae_decoder.onnx and manifest.json into models_dir."""
    models_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    encoder, decoder = dbvae(rng)
    for name, model in (("cnn.onnx", cnn(rng)), ("dbvae_encoder.onnx", encoder), ("dbvae_decoder.onnx", decoder),
                        ("cnn_scan.onnx", scanner("cnn_scan")), ("dbvae_scan.onnx", scanner("dbvae_scan"))):
        onnx.save(model, models_dir / name)
    write_manifest(models_dir)
    return models_dir


class Reference:
    """The fixture graphs run directly with ONNX Runtime: the expected values the service must reproduce."""

    def __init__(self, models_dir: Path) -> None:
        import onnxruntime as ort

        def session(name: str):
            return ort.InferenceSession(str(models_dir / name), providers=["CPUExecutionProvider"])

        self.cnn, self.encoder, self.decoder = (session(n) for n in
                                                ("cnn.onnx", "dbvae_encoder.onnx", "dbvae_decoder.onnx"))

    def probability(self, model: str, batch: np.ndarray) -> np.ndarray:
        sess = self.cnn if model == "cnn" else self.encoder
        logit = sess.run(["logit"], {"image": batch})[0].astype(np.float64)
        return 1.0 / (1.0 + np.exp(-logit))

    def mu(self, batch: np.ndarray) -> np.ndarray:
        return self.encoder.run(["mu"], {"image": batch})[0]

    def decode(self, z: np.ndarray) -> np.ndarray:
        return np.clip(self.decoder.run(["image"], {"z": z.astype(np.float32)})[0], 0.0, 1.0)
