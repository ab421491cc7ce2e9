"""The fast scan of one band of a pyramid level: stage 1 (the conv blocks and a low-rank dense layer, over the
whole band) gives an approximate face logit map and the conv features; stage 2 (the exact dense layer and head)
re-scores the windows whose approximate logit is within the manifest's margin of the candidate threshold. The
map is then exact wherever a window can become a candidate. A re-implementation of training/fast_scan.py's
`survivors` and `window_features` and of training/localiser.py's `FastGraphs.logit_map` (the two halves share no
code; tests/test_fast_scan.py checks that they give the same maps).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # runtime.py calls band_logits: no import cycle at run time
    from service.runtime import Runtime

FEATURE_SIDE = 4  # a window's conv features: [72, 4, 4]
# Windows scored per run of the window head: 4096 x 72 x 4 x 4 float32 is 19 MB of features.
HEAD_BATCH = 4096


def survivors(approx: np.ndarray, floor: float, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions of an approximate logit map [h, w] within `margin` of the logit of probability `floor`, or above."""
    limit = -np.inf if floor <= 0 else np.inf if floor >= 1 else np.log(floor / (1.0 - floor)) - margin
    return np.nonzero(approx >= limit)


def window_features(features: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Features [72, h, w] -> those of the windows at logit-map positions (rows, cols): [K, 72, 4, 4]."""
    k = np.arange(FEATURE_SIDE)
    patches = features[:, rows[:, None, None] + k[None, :, None], cols[:, None, None] + k[None, None, :]]
    return np.ascontiguousarray(patches.transpose(1, 0, 2, 3))


def band_logits(runtime: Runtime, model: str, band: np.ndarray, floor: float) -> np.ndarray:
    """A band float32 [1, C, H, W] -> its logit map [H/16 - 3, W/16 - 3] (of the pyramid level: a level scan reads
    it at half the size), exact from `floor` on (with a level scan, close: training/level_scan.py)."""
    approx, features = runtime.fast_scan(model, band)
    rows, cols = survivors(approx, floor, runtime.manifest.localiser.fast_scan_margin)
    for start in range(0, len(rows), HEAD_BATCH):
        r, c = rows[start:start + HEAD_BATCH], cols[start:start + HEAD_BATCH]
        approx[r, c] = runtime.window_logits(model, window_features(features, r, c))
    return approx
