"""The model contract as training writes it: the ONNX graphs each model exports, their input and output names,
the input images and the manifest format. The service keeps a deliberate copy (service/contract.py);
tests/test_contract.py checks that both sides say the same.
"""

from __future__ import annotations

MANIFEST_VERSION = 1
OPSET = 18
IMAGE_SIZE = 64  # every graph's images are [N, 3, 64, 64]
IMAGE_INPUT = "image"  # float32 RGB NCHW in [0, 1]
LATENT_INPUT = "z"  # the decoder's input: float32 [N, latent_dim]

# graph role -> (input name, output names)
GRAPH_IO: dict[str, tuple[str, tuple[str, ...]]] = {
    "classifier": (IMAGE_INPUT, ("logit",)),
    "encoder": (IMAGE_INPUT, ("logit", "mu", "logvar")),
    "decoder": (LATENT_INPUT, ("image",)),
    # the localiser's scan graph: image [N, 3, H, W] (H, W multiples of 16) -> face logit map [N, H/16-3, W/16-3]
    "scanner": (IMAGE_INPUT, ("logit_map",)),
    # the fast scan (training/fast_scan.py), stage 1: level [N, C, H, W] (C = 1 luma for grey models, else 3)
    # -> approximate logit map [N, H/16-3, W/16-3] and conv features [N, 72, H/16, W/16]
    "fast_scan": (IMAGE_INPUT, ("approx_logit_map", "features")),
    # stage 2: the features of K windows [K, 72, 4, 4] -> their exact face logits [K]
    "window_head": ("features", ("logit",)),
    # box regression (training/box_regression.py): the same features of K windows [K, 72, 4, 4] -> where the face
    # is in each [K, 3]: centre offset x, y in window sides, log(face side / window side)
    "box_head": ("features", ("box",)),
    # the level scan (training/level_scan.py): the fast scan's stage 1 for pyramid levels only, int8, reading the
    # level at the manifest's input_scale (0.5: [N, C, H/2, W/2]) -> the same two outputs, in the same windows
    "level_scan": (IMAGE_INPUT, ("approx_logit_map", "features")),
}
# model -> graph role -> file in models/
MODEL_FILES: dict[str, dict[str, str]] = {
    "cnn": {"classifier": "cnn.onnx", "scanner": "cnn_scan.onnx", "fast_scan": "cnn_fast_scan.onnx",
            "window_head": "cnn_window_head.onnx"},
    "dbvae": {"encoder": "dbvae_encoder.onnx", "decoder": "dbvae_decoder.onnx", "scanner": "dbvae_scan.onnx",
              "fast_scan": "dbvae_fast_scan.onnx", "window_head": "dbvae_window_head.onnx"},
}
# The fast scan's graphs (training/fast_scan.py): optional for a reader, as manifests from before them lack them.
FAST_SCAN_GRAPHS: tuple[str, ...] = ("fast_scan", "window_head")
# The box head (training/box_regression.py): optional for a reader, as manifests from before it lack it; fitted on
# the fast scan's features after export, so it is named here and not among the exporters' MODEL_FILES.
BOX_HEAD_GRAPH = "box_head"
BOX_HEAD_FILES: dict[str, str] = {model: f"{model}_box_head.onnx" for model in MODEL_FILES}
# The level scan (training/level_scan.py): optional for a reader, as manifests from before it lack it; built from
# the exported fast scan after export, so named here and not among MODEL_FILES.
LEVEL_SCAN_GRAPH = "level_scan"
LEVEL_SCAN_FILES: dict[str, str] = {model: f"{model}_level_scan.onnx" for model in MODEL_FILES}
MODEL_GRAPHS: dict[str, tuple[str, ...]] = {model: tuple(r for r in files if r not in FAST_SCAN_GRAPHS)
                                            for model, files in MODEL_FILES.items()}
# model -> the graph whose "logit" output is the face logit
SCORING_GRAPH: dict[str, str] = {"cnn": "classifier", "dbvae": "encoder"}

# The canonical pre-processing (training/data/image.py; service/preprocess.py re-implements it), by step name.
PREPROCESS = ["decode_jpeg_draft_2x", "exif_transpose", "to_rgb", "centre_square_crop",
              f"resize_bilinear_{IMAGE_SIZE}", "scale_1_255"]
INPUT = {"name": IMAGE_INPUT, "layout": "NCHW", "channels": 3, "size": IMAGE_SIZE, "channel_order": "RGB",
         "dtype": "float32", "range": [0.0, 1.0], "preprocess": PREPROCESS}
