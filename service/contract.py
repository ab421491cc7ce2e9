"""The model contract as the service reads it: which graphs each model has, their input and output names,
and the manifest format. The two halves never share code, so this is a deliberate copy of
training/contract.py; tests/test_contract.py checks that both sides say the same.
"""

from __future__ import annotations

MANIFEST_VERSION = 1
IMAGE_INPUT = "image"  # every image graph's input: float32 RGB [N, 3, size, size] in [0, 1]
LATENT_INPUT = "z"  # the decoder's input: float32 [N, latent_dim]

# graph role -> (input name, output names); outputs are read by name, extra outputs are ignored.
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
# model -> the graph roles the service needs from it (other graphs or models in the manifest are ignored).
MODEL_GRAPHS: dict[str, tuple[str, ...]] = {"cnn": ("classifier", "scanner"),
                                            "dbvae": ("encoder", "decoder", "scanner")}
# The fast scan's graphs: used where a model's manifest entry has both and its "fast_scan" record (manifests from
# before it have neither, and are scanned by the scanner alone).
FAST_SCAN_GRAPHS: tuple[str, ...] = ("fast_scan", "window_head")
# The box head: used where a model's manifest entry has it, its "box_head" record and a fast scan (it reads the
# fast scan's features); manifests from before it have none.
BOX_HEAD_GRAPH = "box_head"
# The level scan: used for pyramid levels where a model's manifest entry has it, its "level_scan" record and a fast
# scan (its candidates are verified through the fast scan's graphs); manifests from before it have none.
LEVEL_SCAN_GRAPH = "level_scan"
# model -> the graph whose "logit" output is the face logit.
SCORING_GRAPH: dict[str, str] = {"cnn": "classifier", "dbvae": "encoder"}
