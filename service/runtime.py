"""The ONNX Runtime layer: one session per graph, checked against the model contract, on the providers
asked for, warmed up at every batch size it will run. No HTTP here: it takes arrays and returns arrays."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from service.contract import (BOX_HEAD_GRAPH, FAST_SCAN_GRAPHS, GRAPH_IO, IMAGE_INPUT, LEVEL_SCAN_GRAPH, MODEL_GRAPHS,
                              SCORING_GRAPH)
from service.fast_scan import HEAD_BATCH, band_logits
from service.manifest import ModelError, load_manifest
from service.schemas import Manifest
from service.settings import Settings

log = logging.getLogger("service.runtime")
WARM_UP_LEVEL = 256  # px: the side of the level each scan graph is timed on at warm-up
# Graph roles that run one pyramid level (or band) of one photo at a time: their shapes vary, their batch does not.
LEVEL_ROLES = ("scanner", "fast_scan", LEVEL_SCAN_GRAPH)
# Graph roles a photo's scan alternates between: their intra-op threads do not spin after a run, or they would
# take the cores from the next role's run (1920x1280 photos 1.30 -> 0.97 s in training's copy of the localiser).
# The crop graphs keep spinning: back-to-back micro-batches of one graph are what it helps.
SCAN_ROLES = ("scanner", "fast_scan", "window_head", BOX_HEAD_GRAPH, LEVEL_SCAN_GRAPH)
# Windows a box head run takes at most: service/localiser.py moves a photo's refined faces REFINE_BATCH at a time.
BOX_HEAD_BATCH = 64


def sigmoid(logit: np.ndarray) -> np.ndarray:
    """Face probability, float64, without overflow for large |logit|."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(logit, dtype=np.float64)))


def batch_buckets(largest: int) -> tuple[int, ...]:
    """Batch sizes the service actually runs: powers of two, capped at `largest` (which is included).

    Requests are padded up to the next bucket, so warm-up can cover every shape a request will use.
    """
    sizes, b = [], 1
    while b < largest:
        sizes.append(b)
        b *= 2
    return (*sizes, largest)


@dataclass
class Graph:
    key: str  # "<model>.<role>", e.g. "dbvae.encoder"
    file: str
    session: ort.InferenceSession
    input: str
    outputs: tuple[str, ...]
    buckets: tuple[int, ...]
    warmed_batch_sizes: list[int] = field(default_factory=list)
    observe: Callable[[str, int, float], None] | None = None

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        n = len(x)
        size = next((b for b in self.buckets if b >= n), n)
        if size > n:
            x = np.concatenate([x, np.zeros((size - n, *x.shape[1:]), dtype=x.dtype)])
        start = time.perf_counter()
        results = self.session.run(list(self.outputs), {self.input: x})
        if self.observe is not None:
            self.observe(self.key, n, time.perf_counter() - start)
        return {name: out[:n] for name, out in zip(self.outputs, results)}


class Runtime:
    """Every graph the service serves, opened once at start-up and shared by all requests (ORT sessions are
    safe to run from several threads)."""

    def __init__(self, settings: Settings, manifest: Manifest, graphs: dict[str, Graph]):
        self.settings, self.manifest, self.graphs = settings, manifest, graphs
        self.size = manifest.input.size
        self.warmed_up = False
        self.scan_seconds_per_pixel = 0.0  # the slowest scan graph's, timed at warm-up: photo jobs' first cost estimate

    @classmethod
    def load(cls, settings: Settings) -> Runtime:
        """Verify the manifest and files, then open one session per graph. Raises ModelError."""
        manifest = load_manifest(settings.models_dir)
        providers = choose_providers(settings.providers)
        # A micro-batch holds up to micro_batch_max images; 2: morph encodes a and b together.
        image_batch = max(settings.max_images_per_request, settings.micro_batch_max, 2)
        graphs: dict[str, Graph] = {}
        for model, required in MODEL_GRAPHS.items():
            fast = manifest.models[model].fast_scan is not None
            box = fast and manifest.models[model].box_head is not None  # it reads the fast scan's features
            # its candidates are verified through the fast scan's graphs
            level = fast and settings.level_scan and manifest.models[model].level_scan is not None
            for role in (*required, *(FAST_SCAN_GRAPHS if fast else ()), *((BOX_HEAD_GRAPH,) if box else ()),
                         *((LEVEL_SCAN_GRAPH,) if level else ())):
                file = manifest.models[model].graphs[role]
                session = open_session(settings, file, providers, spin=role not in SCAN_ROLES)
                check_contract(session, file, role, manifest, model)
                name_in, names_out = GRAPH_IO[role]
                largest = (1 if role in LEVEL_ROLES else HEAD_BATCH if role == "window_head" else
                           BOX_HEAD_BATCH if role == BOX_HEAD_GRAPH else
                           image_batch if name_in == IMAGE_INPUT else settings.max_morph_steps)
                key = f"{model}.{role}"
                graphs[key] = Graph(key, file, session, name_in, names_out, batch_buckets(largest))
                log.info("loaded %s from %s on %s", key, file, session.get_providers())
        return cls(settings, manifest, graphs)

    def warm_up(self) -> None:
        """One inference per graph at every batch size the service uses, so no request pays first-run costs."""
        for graph in self.graphs.values():
            shape = graph_item_shape(graph.session)
            for b in graph.buckets:
                graph.run(np.zeros((b, *shape), dtype=np.float32))
                graph.warmed_batch_sizes.append(b)
        for model in MODEL_GRAPHS:  # and one larger level per model, timed through the scan it will use
            channels = graph_item_shape(self.level_graph(model).session)[0]
            level = np.zeros((1, channels, WARM_UP_LEVEL, WARM_UP_LEVEL), dtype=np.float32)
            seconds = min(_timed(self.scan_band, model, level) for _ in range(3))
            # per pixel of the pyramid, as photo jobs count them: a level scan's level covers 1 / scale^2 of those
            pixels = WARM_UP_LEVEL ** 2 / self.level_input_scale(model) ** 2
            self.scan_seconds_per_pixel = max(self.scan_seconds_per_pixel, seconds / pixels)
        self.warmed_up = True
        log.info("warm-up done: %s", {k: g.warmed_batch_sizes for k, g in self.graphs.items()})

    def gpu_problem(self) -> str | None:
        """Why FACEDET_REQUIRE_GPU is not met, or None."""
        if not self.settings.require_gpu:
            return None
        on_cpu = [k for k, g in self.graphs.items() if g.providers[0] == "CPUExecutionProvider"]
        if not on_cpu:
            return None
        return (f"FACEDET_REQUIRE_GPU is set but {', '.join(on_cpu)} run on CPUExecutionProvider "
                f"(available: {', '.join(ort.get_available_providers())})")

    # --- what a model answers ---

    def threshold(self, model: str) -> float:
        override = self.settings.threshold
        return override if override is not None else self.manifest.models[model].threshold

    def scoring_graph(self, model: str) -> Graph:
        return self.graphs[f"{model}.{SCORING_GRAPH[model]}"]

    def provider(self, model: str) -> str:
        return self.scoring_graph(model).providers[0]

    def classify(self, model: str, batch: np.ndarray) -> np.ndarray:
        """float32 [N, 3, S, S] -> face probability [N] (float64)."""
        return sigmoid(self.scoring_graph(model).run(batch)["logit"].reshape(len(batch)))

    def scan(self, model: str, level: np.ndarray) -> np.ndarray:
        """One pyramid level float32 [1, 3, H, W] (H, W multiples of the stride) -> face logit map [H', W']."""
        return self.graphs[f"{model}.scanner"].run(level)["logit_map"][0]

    def has_fast_scan(self, model: str) -> bool:
        return self.manifest.models[model].fast_scan is not None  # load() opened its graphs then

    def has_box_head(self, model: str) -> bool:
        return f"{model}.{BOX_HEAD_GRAPH}" in self.graphs  # load() opened it: the entry has it and a fast scan

    def box_offsets(self, model: str, crops: np.ndarray) -> np.ndarray:
        """Whole windows float32 [N, C, S, S] (C from the fast scan's input) -> where the face is in each, [N, 3]:
        centre offset x, y in window sides and log(face side / window side), from the fast scan's features."""
        features = self.graphs[f"{model}.fast_scan"].run(crops)["features"]
        return self.graphs[f"{model}.{BOX_HEAD_GRAPH}"].run(features)["box"]

    def has_level_scan(self, model: str) -> bool:
        # load() opened it: the entry has it and a fast scan, and FACEDET_LEVEL_SCAN is on
        return f"{model}.{LEVEL_SCAN_GRAPH}" in self.graphs

    def level_input_scale(self, model: str) -> float:
        """The size of the levels a model's scan reads, as a share of the pyramid's: its level scan's input
        scale (0.5: half the width and height), else 1."""
        return self.manifest.models[model].level_scan.input_scale if self.has_level_scan(model) else 1.0

    def level_graph(self, model: str) -> Graph:
        """The graph a model's pyramid levels are scanned with: its level scan, else its fast scan's stage 1,
        else its scanner."""
        if self.has_level_scan(model):
            return self.graphs[f"{model}.{LEVEL_SCAN_GRAPH}"]
        return self.graphs[f"{model}.fast_scan" if self.has_fast_scan(model) else f"{model}.scanner"]

    def scan_band(self, model: str, band: np.ndarray) -> np.ndarray:
        """One band of a level, float32 [1, C, H, W] (at level_input_scale) -> its face logit map, exact from the
        scan threshold on (with a level scan: close to it, export measures how close): through the fast scan's
        two stages where the model has one (C from its input), else the scanner (C = 3)."""
        if not self.has_fast_scan(model):
            return self.scan(model, band)
        return band_logits(self, model, band, self.manifest.localiser.scan_threshold)

    def fast_scan(self, model: str, band: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stage 1, through level_graph: a band [1, C, H, W] -> (approximate logit map [H', W'], conv features
        [72, H'+3, W'+3]), H' = H / 16 - 3 of the pyramid's level."""
        out = self.level_graph(model).run(band)
        return out["approx_logit_map"][0], out["features"][0]

    def window_logits(self, model: str, features: np.ndarray) -> np.ndarray:
        """Stage 2: windows' conv features float32 [K, 72, 4, 4] -> their exact face logits [K]."""
        return self.graphs[f"{model}.window_head"].run(features)["logit"].reshape(len(features))

    def scan_windows(self, model: str, crops: np.ndarray) -> np.ndarray:
        """float32 [N, 3, S, S] crops -> face logit [N]: the scan graph on whole windows is the crop classifier."""
        return self.graphs[f"{model}.scanner"].run(crops)["logit_map"].reshape(len(crops))

    def window_crop_logits(self, model: str, crops: np.ndarray) -> np.ndarray:
        """Whole windows float32 [N, C, S, S] -> face logit [N]: through the fast scan's two stages where the model
        has one (C from its input: 1 for luma; the same logits as the scan graph on those windows), else the scan
        graph (C = 3). Luma crops are a third of the resizing and of the first layer's input."""
        if not self.has_fast_scan(model):
            return self.scan_windows(model, crops)
        return self.window_logits(model, self.graphs[f"{model}.fast_scan"].run(crops)["features"])

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """float32 [N, 3, S, S] -> the DB-VAE's latent means [N, D]."""
        return self.graphs["dbvae.encoder"].run(batch)["mu"]

    def generate(self, z: np.ndarray) -> np.ndarray:
        """Latents [N, D] -> the DB-VAE decoder's images, float32 [N, C, S, S] in [0, 1]: C = 3, or 1 where the
        manifest says the decoder is grey (its graph gives R = G = B; one channel is all there is to serve)."""
        images = self.graphs["dbvae.decoder"].run(np.ascontiguousarray(z, dtype=np.float32))["image"]
        if self.manifest.models["dbvae"].output_colour == "grey":
            images = images[:, :1]
        return np.clip(images, 0.0, 1.0)


def _timed(fn: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def choose_providers(requested: list[str]) -> list[str]:
    available = ort.get_available_providers()
    chosen = [p for p in requested if p in available]
    skipped = [p for p in requested if p not in available]
    if skipped:
        log.warning("execution providers %s are not in this onnxruntime build (it has %s)", skipped, available)
    if "CUDAExecutionProvider" in chosen and hasattr(ort, "preload_dlls"):
        # With the CUDA/cuDNN pip wheels (no system CUDA, as in the slim image) this makes them loadable.
        try:
            ort.preload_dlls()
        except Exception as exc:  # noqa: BLE001 - a failed preload only means CUDA will not be used
            log.warning("onnxruntime.preload_dlls() failed: %s", exc)
    return chosen or ["CPUExecutionProvider"]


def open_session(settings: Settings, file: str, providers: list[str], spin: bool = True) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # ORT's own warnings (e.g. CUDA fallback) are reported by us instead
    path = settings.models_dir / file
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types for unreadable graphs
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: ONNX Runtime cannot load it: {first_line}") from None


def graph_item_shape(session: ort.InferenceSession) -> tuple[int, ...]:
    """The shape of one input item a graph was exported for; a dynamic (spatial) axis counts as 64."""
    return tuple(d if isinstance(d, int) else 64 for d in session.get_inputs()[0].shape[1:])


def check_contract(session: ort.InferenceSession, file: str, role: str, manifest: Manifest, model: str) -> None:
    want_in, want_out = GRAPH_IO[role]
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    if set(inputs) != {want_in} or not set(want_out) <= outputs:
        raise ModelError(f"{file}: inputs {sorted(inputs)} / outputs {sorted(outputs)} do not match the "
                         f"contract for a {role} (inputs {[want_in]}, outputs {list(want_out)})")
    shape = inputs[want_in].shape
    size = manifest.input.size
    if role in ("fast_scan", LEVEL_SCAN_GRAPH):
        expected = [1 if manifest.models[model].fast_scan.input == "luma" else 3, size, size]
    elif role in ("window_head", BOX_HEAD_GRAPH):
        expected = [None, 4, 4]  # [K, channels, 4, 4]: the channels are the model's own
    else:
        expected = [3, size, size] if want_in == IMAGE_INPUT else [manifest.latent_dim]
    if isinstance(shape[0], int) or len(shape) != 1 + len(expected):
        raise ModelError(f"{file}: input shape {shape} must be [N, {', '.join(map(str, expected))}] "
                         "with a dynamic batch axis N")
    fixed = [d for d, e in zip(shape[1:], expected) if isinstance(d, int) and e is not None and d != e]
    if fixed:
        raise ModelError(f"{file}: input shape {shape} does not match [N, {', '.join(map(str, expected))}]")
