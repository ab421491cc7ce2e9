"""ONNX Runtime sessions, admission control and the thread pool that every inference runs in."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import numpy as np
import onnxruntime as ort

from service.batcher import MicroBatcher
from service.errors import ProblemError
from service.manifest import ModelError, load_manifest
from service.schemas import Manifest
from service.settings import Settings
from service.uploads import Payload, decode_batch, load_batch, open_small

log = logging.getLogger("service.engine")
T = TypeVar("T")

# graph role -> (input names, output names) the service reads, per the model contract.
CONTRACT = {
    "classifier": (("image",), ("logit",)),
    "encoder": (("image",), ("logit", "mu", "logvar")),
    "decoder": (("z",), ("image",)),
}


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
    key: str
    file: str
    session: ort.InferenceSession
    input: str
    outputs: tuple[str, ...]
    buckets: tuple[int, ...]
    warmed: list[int] = field(default_factory=list)
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


class Engine:
    def __init__(self, settings: Settings, manifest: Manifest, graphs: dict[str, Graph], providers: list[str]):
        self.settings, self.manifest, self.graphs, self.requested_providers = settings, manifest, graphs, providers
        self.size = manifest.input.size
        self.warmed = False
        self.draining = False
        self._admitted = 0
        self.served = 0  # requests that held a place and left: service/memory.py trims after new traffic
        self._capacity = settings.worker_threads + settings.max_queue
        self._pool = ThreadPoolExecutor(settings.worker_threads, thread_name_prefix="inference")
        self.batchers: dict[str, MicroBatcher] = {}
        if settings.micro_batch_max > 0:
            for model in manifest.models:
                self.batchers[model] = MicroBatcher(
                    partial(self.detect_many, model), self.call, max_images=settings.micro_batch_max,
                    wait_s=settings.micro_batch_wait_ms / 1e3, max_in_flight=settings.worker_threads)

    # --- start-up ---

    @classmethod
    def load(cls, settings: Settings) -> Engine:
        """Verify the manifest and files, then open one session per graph. Raises ModelError."""
        manifest = load_manifest(settings.models_dir)
        providers = choose_providers(settings.providers)
        # A micro-batch holds up to micro_batch_max images; 2: morph encodes a and b together.
        detect_batch = max(settings.max_images_per_request, settings.micro_batch_max)
        graphs: dict[str, Graph] = {}
        for model, role, largest in (("cnn", "classifier", detect_batch), ("dbvae", "encoder", max(detect_batch, 2)),
                                     ("dbvae", "decoder", settings.max_morph_steps)):
            file = manifest.models[model].graphs[role]
            session = open_session(settings, file, providers)
            check_contract(session, file, role, manifest)
            graphs[f"{model}.{role}"] = Graph(f"{model}.{role}", file, session, CONTRACT[role][0][0],
                                              CONTRACT[role][1], batch_buckets(largest))
            log.info("loaded %s from %s on %s", f"{model}.{role}", file, session.get_providers())
        return cls(settings, manifest, graphs, providers)

    def warm_up(self) -> None:
        """One inference per graph at every batch size the service uses, so no request pays first-run costs."""
        for graph in self.graphs.values():
            shape = (3, self.size, self.size) if graph.input == "image" else (self.manifest.latent_dim,)
            for b in graph.buckets:
                graph.run(np.zeros((b, *shape), dtype=np.float32))
                graph.warmed.append(b)
        self.warmed = True
        log.info("warm-up done: %s", {k: g.warmed for k, g in self.graphs.items()})

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # --- readiness ---

    def not_ready_reason(self) -> str | None:
        if self.draining:
            return "shutting down: finishing in-flight requests"
        if not self.warmed:
            return "warming up"
        if self.settings.require_gpu:
            on_cpu = [k for k, g in self.graphs.items() if g.providers[0] == "CPUExecutionProvider"]
            if on_cpu:
                return (f"FACEDET_REQUIRE_GPU is set but {', '.join(on_cpu)} run on CPUExecutionProvider "
                        f"(available: {', '.join(ort.get_available_providers())})")
        return None

    # --- admission and the pool ---

    @property
    def admitted(self) -> int:
        return self._admitted

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """Hold one of `worker_threads + max_queue` places, or fail fast with 503 + Retry-After."""
        if self._admitted >= self._capacity:
            raise ProblemError(503, "overloaded", "Service overloaded",
                               f"{self._admitted} requests are already in flight or queued; retry shortly",
                               headers={"Retry-After": str(self.settings.retry_after_s)})
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1
            self.served += 1

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU work (decoding, inference) in the bounded pool, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # --- inference (runs in the pool) ---

    def threshold(self, model: str) -> float:
        override = self.settings.threshold
        return override if override is not None else self.manifest.models[model].threshold

    def provider(self, model: str) -> str:
        role = "classifier" if model == "cnn" else "encoder"
        return self.graphs[f"{model}.{role}"].providers[0]

    def classify(self, model: str, batch: np.ndarray) -> np.ndarray:
        graph = self.graphs["cnn.classifier"] if model == "cnn" else self.graphs["dbvae.encoder"]
        logit = graph.run(batch)["logit"].reshape(len(batch)).astype(np.float64)
        return 0.5 * (1.0 + np.tanh(0.5 * logit))  # sigmoid without overflow for large |logit|

    async def detect(self, model: str, payloads: list[Payload]) -> np.ndarray:
        """Face probabilities for one request's images: on the event loop if they are small
        (FACEDET_INLINE_MAX_PIXELS), else in the pool, alone or in a micro-batch if that is enabled."""
        batcher = self.batchers.get(model)
        if batcher is not None:
            return await batcher.submit(payloads, len(payloads))
        images = open_small(payloads, self.settings.inline_max_pixels, self.settings.max_image_pixels)
        if images is not None:  # small enough to be cheaper here than a round trip through the pool
            return self.classify(model, load_batch(images, self.size))
        return await self.call(lambda: self.classify(model, decode_batch(payloads, self.size,
                                                                         self.settings.max_image_pixels)))

    def detect_many(self, model: str, requests: list[list[Payload]]) -> list[np.ndarray | Exception]:
        """Several requests' images -> one inference; a request whose upload fails gets only its own error."""
        decoded: list[np.ndarray | Exception] = []
        for payloads in requests:
            try:
                decoded.append(decode_batch(payloads, self.size, self.settings.max_image_pixels))
            except Exception as exc:  # noqa: BLE001 - handed to that request's handler, which maps it
                decoded.append(exc)
        good = [d for d in decoded if not isinstance(d, Exception)]
        probabilities = self.classify(model, np.concatenate(good)) if good else np.empty(0)
        answers, start = [], 0
        for d in decoded:
            if isinstance(d, Exception):
                answers.append(d)
            else:
                answers.append(probabilities[start:start + len(d)])
                start += len(d)
        return answers

    def encode(self, batch: np.ndarray) -> np.ndarray:
        return self.graphs["dbvae.encoder"].run(batch)["mu"]

    def decode(self, z: np.ndarray) -> np.ndarray:
        images = self.graphs["dbvae.decoder"].run(np.ascontiguousarray(z, dtype=np.float32))["image"]
        return np.clip(images, 0.0, 1.0)


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


def open_session(settings: Settings, file: str, providers: list[str]) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.intra_op_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # ORT's own warnings (e.g. CUDA fallback) are reported by us instead
    path = settings.models_dir / file
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types for unreadable graphs
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: ONNX Runtime cannot load it: {first_line}") from None


def check_contract(session: ort.InferenceSession, file: str, role: str, manifest: Manifest) -> None:
    want_in, want_out = CONTRACT[role]
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    if set(inputs) != set(want_in) or not set(want_out) <= outputs:
        raise ModelError(f"{file}: inputs {sorted(inputs)} / outputs {sorted(outputs)} do not match the "
                         f"contract for a {role} (inputs {list(want_in)}, outputs {list(want_out)})")
    shape = inputs[want_in[0]].shape
    size = manifest.input.size
    expected = [3, size, size] if role != "decoder" else [manifest.latent_dim]
    if isinstance(shape[0], int) or len(shape) != 1 + len(expected):
        raise ModelError(f"{file}: input shape {shape} must be [N, {', '.join(map(str, expected))}] "
                         "with a dynamic batch axis N")
    fixed = [d for d, e in zip(shape[1:], expected) if isinstance(d, int) and d != e]
    if fixed:
        raise ModelError(f"{file}: input shape {shape} does not match [N, {', '.join(map(str, expected))}]")
