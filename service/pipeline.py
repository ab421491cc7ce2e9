"""What a request's images go through, from payloads to answers: where they are decoded (on the event loop
when small, else in the pool, alone or in a micro-batch), then which graphs run on them.

The one place that decides per request; it calls the image layer (service/preprocess.py) and the ONNX layer
(service/runtime.py) and holds the admission (service/admission.py) every upload route enters first.
"""

from __future__ import annotations

from functools import partial
from typing import Literal

import numpy as np

from service import render
from service.admission import Admission
from service.batcher import MicroBatcher
from service.preprocess import Payload, decode_batch, load_batch, open_small
from service.runtime import Runtime
from service.settings import Settings

MorphFormat = Literal["png", "gif", "json"]


class Pipeline:
    def __init__(self, settings: Settings, runtime: Runtime, admission: Admission):
        self.settings, self.runtime, self.admission = settings, runtime, admission
        self.size = runtime.size
        self.batchers: dict[str, MicroBatcher] = {}
        if settings.micro_batch_max > 0:
            for model in runtime.manifest.models:
                self.batchers[model] = MicroBatcher(
                    partial(self.detect_many, model), admission.run, max_images=settings.micro_batch_max,
                    wait_s=settings.micro_batch_wait_ms / 1e3, max_in_flight=settings.worker_threads)

    def not_ready_reason(self) -> str | None:
        if self.admission.draining:
            return "shutting down: finishing in-flight requests"
        if not self.runtime.warmed_up:
            return "warming up"
        return self.runtime.gpu_problem()

    def _decode(self, payloads: list[Payload]) -> np.ndarray:
        return decode_batch(payloads, self.size, self.settings.max_image_pixels)

    # --- POST /detect ---

    async def detect(self, model: str, payloads: list[Payload]) -> np.ndarray:
        """Face probabilities [N] for one request's images: on the event loop if they are small
        (FACEDET_INLINE_MAX_PIXELS), else in the pool, alone or in a micro-batch if that is enabled."""
        batcher = self.batchers.get(model)
        if batcher is not None:
            return await batcher.submit(payloads, len(payloads))
        images = open_small(payloads, self.settings.inline_max_pixels, self.settings.max_image_pixels)
        if images is not None:  # small enough to be cheaper here than a round trip through the pool
            return self.runtime.classify(model, load_batch(images, self.size))
        return await self.admission.run(lambda: self.runtime.classify(model, self._decode(payloads)))

    def detect_many(self, model: str, requests: list[list[Payload]]) -> list[np.ndarray | Exception]:
        """Several requests' images -> one inference; a request whose upload fails gets only its own error."""
        decoded: list[np.ndarray | Exception] = []
        for payloads in requests:
            try:
                decoded.append(self._decode(payloads))
            except Exception as exc:  # noqa: BLE001 - handed to that request's handler, which maps it
                decoded.append(exc)
        good = [d for d in decoded if not isinstance(d, Exception)]
        probabilities = self.runtime.classify(model, np.concatenate(good)) if good else np.empty(0)
        answers, start = [], 0
        for d in decoded:
            if isinstance(d, Exception):
                answers.append(d)
            else:
                answers.append(probabilities[start:start + len(d)])
                start += len(d)
        return answers

    # --- POST /reconstruct and /morph (the DB-VAE) ---

    async def reconstruct(self, payload: Payload) -> bytes:
        """One image -> its DB-VAE reconstruction as a PNG. The latent mean, not a sample: the same upload
        always gives the same picture."""
        def job() -> bytes:
            return render.png(self.runtime.generate(self.runtime.encode(self._decode([payload])))[0])

        return await self.admission.run(job)

    async def morph(self, a: Payload, b: Payload, steps: int, fmt: MorphFormat) -> tuple[bytes | list[str], float]:
        """Latent means of a and b, interpolated linearly over `steps` frames (both ends included) and decoded in
        one batch -> (PNG strip, GIF or base64 PNG frames, Euclidean distance between the two means)."""
        def job() -> tuple[bytes | list[str], float]:
            mu = self.runtime.encode(self._decode([a, b])).astype(np.float64)  # [2, D]
            t = np.linspace(0.0, 1.0, steps)[:, None]  # [steps, 1]
            frames = self.runtime.generate((1.0 - t) * mu[0] + t * mu[1])  # [steps, 3, S, S]
            distance = float(np.linalg.norm(mu[1] - mu[0]))
            if fmt == "json":
                return render.base64_pngs(frames), distance
            return (render.gif(frames) if fmt == "gif" else render.png_strip(frames)), distance

        return await self.admission.run(job)
