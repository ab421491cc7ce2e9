"""What a request's images go through, from payloads to answers: where they are decoded (on the event loop
when small, else in the pool, alone or in a micro-batch), then which graphs run on them.

The one place that decides per request; it calls the image layer (service/preprocess.py) and the ONNX layer
(service/runtime.py) and holds the admission (service/admission.py) every upload route enters first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Literal, TypeVar

import numpy as np
from PIL import Image

from service import render
from service.admission import Admission
from service.batcher import MicroBatcher
from service.budget import MB, decoded_bytes, scan_bytes
from service.localiser import band_size, clip_boxes, face_square, geometry, locate, pyramid
from service.preprocess import (Payload, centre_box, decode_batch, load, load_batch, load_photo, may_be_small,
                                open_image, open_small, oriented_size, tiff_decode_unit, to_model_input)
from service.problems import ProblemError
from service.runtime import Runtime
from service.settings import Settings

MorphFormat = Literal["png", "gif", "json"]
T = TypeVar("T")
# Weight of the newest photo job in the running seconds-per-scanned-pixel figure: ~10 jobs' memory.
RATE_WEIGHT = 0.1
Box = tuple[int, int, int, int]  # x, y, width, height in px of the image after EXIF orientation


@dataclass(frozen=True)
class Estimate:
    """What a request's images will take, from their headers: peak bytes, and pixels of every level scanned."""

    nbytes: int
    scan_pixels: int


@dataclass(frozen=True)
class FaceChoice:
    box: Box
    source: Literal["request", "found", "centre"]  # asked for; the largest face found; the centre square

    def header(self) -> str:
        return ",".join(map(str, self.box))


@dataclass(frozen=True)
class FindFaces:
    """What /detect was asked for: boxes=False is the single centre-crop answer of earlier releases."""

    boxes: bool = True
    threshold: float | None = None  # None: the manifest's (localiser threshold for photos, model's for crops)
    min_face_size: int | None = None  # None: the manifest's localiser.min_face_size
    max_faces: int | None = None
    min_neighbours: int | None = None  # None: the manifest's localiser.min_neighbours


@dataclass(frozen=True)
class Answer:
    """One image's answer: its best face probability, the threshold it was held to, its faces [M, 5]
    (x, y, width, height, score; None when boxes were not asked for)."""

    probability: float
    threshold: float
    faces: np.ndarray | None


def frame_distances(frames: np.ndarray) -> list[dict[str, float]]:
    """Each decoded frame [steps, C, S, S]'s RMS pixel distance (0..1) to the first frame (a's reconstruction) and
    to the last (b's): a morph that moves from a to b has the second falling frame by frame."""
    flat = frames.reshape(len(frames), -1).astype(np.float64)
    rms = lambda i: np.sqrt(((flat - flat[i]) ** 2).mean(1))  # noqa: E731 - two uses, one line
    return [{"to_a": float(da), "to_b": float(db)} for da, db in zip(rms(0), rms(-1))]


class Pipeline:
    def __init__(self, settings: Settings, runtime: Runtime, admission: Admission):
        self.settings, self.runtime, self.admission = settings, runtime, admission
        self.size = runtime.size
        self.scan_seconds_per_pixel = 0.0  # photo jobs' time per scanned pixel (run_scans), a running mean; 0: none yet
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

    # --- memory: every request decoded off the event loop first reserves what its images will take ---

    def open_all(self, payloads: list[Payload]) -> list[tuple[str, Image.Image]]:
        """Every image opened (headers only), once: the estimate reads them here, the pool decodes them later."""
        return [(label, open_image(data, max_pixels=self.settings.max_image_pixels, label=label))
                for label, data in payloads]

    def estimate(self, images: list[tuple[str, Image.Image]], min_face: int | None) -> Estimate:
        """Peak bytes of decoding (and, with `min_face`, scanning the photos of) a request's opened images, from
        their headers; they are decoded one after another, so the largest counts. 413 over FACEDET_MAX_REQUEST_MB.
        Also the pixels of every pyramid level the photos will be scanned at: what their scans cost."""
        cfg, limit, peak, scanned = self.runtime.manifest.localiser, self.settings.max_request_mb * MB, 0, 0
        for label, im in images:
            if min_face is None or max(im.size) <= cfg.crop_max_side:
                nbytes = decoded_bytes(im, (2 * self.size, 2 * self.size), tiff_decode_unit(im))
            else:  # as scan_photo: drafted to the pyramid's largest level, which is then scanned
                smallest = min(1.0, cfg.window / min_face)
                requested = (max(1, int(im.width * smallest)), max(1, int(im.height * smallest)))
                nbytes = decoded_bytes(im, requested if smallest < 1.0 else None, tiff_decode_unit(im))
                scales = pyramid(im.width, im.height, cfg, min_face, self.settings.max_scan_pixels)
                levels = [(round(im.width * s) + cfg.stride, round(im.height * s) + cfg.stride) for s in scales]
                if levels:
                    nbytes += scan_bytes(levels[0][0] * levels[0][1], band_size(*levels[0], geometry(cfg)))
                    scanned += sum(w * h for w, h in levels)
            if nbytes > limit:
                raise ProblemError(413, "image-too-large", "Image too large",
                                   f"{label}: a {im.width}x{im.height} {im.format} ({im.mode}) needs ~{nbytes // MB} MB "
                                   f"to decode and scan, over the {limit // MB} MB limit (FACEDET_MAX_REQUEST_MB)")
            peak = max(peak, nbytes)
        return Estimate(peak, scanned)

    @contextmanager
    def reserve(self, images: list[tuple[str, Image.Image]], min_face: int | None = None) -> Iterator[Estimate]:
        """Hold the request's estimate of the global memory budget while its images are decoded."""
        estimate = self.estimate(images, min_face)
        with self.admission.reserve(estimate.nbytes):
            yield estimate

    async def run_scans(self, estimate: Estimate, fn: Callable[..., T], *args: object) -> T:
        """Run a job that scans photos in the pool, its cost (the queue's measure, FACEDET_MAX_QUEUE_WAIT_S)
        estimated from its pyramid pixels; the seconds per pixel measured on this host's photo jobs so far.

        Measured in the thread's CPU time where ONNX Runtime runs in that thread (FACEDET_INTRA_OP_THREADS=1, the
        default), not wall time: under overload the jobs' wall time grows with whatever else takes the cores (such
        as answering the 503s themselves), and an estimate that grew with it would refuse more, slowing them more."""
        rate = self.scan_seconds_per_pixel or self.runtime.scan_seconds_per_pixel
        clock = time.thread_time if self.settings.intra_op_threads == 1 else time.perf_counter

        def timed() -> T:
            start = clock()
            try:
                return fn(*args)
            finally:
                if estimate.scan_pixels:
                    measured = (clock() - start) / estimate.scan_pixels
                    self.scan_seconds_per_pixel = (measured if not self.scan_seconds_per_pixel else
                                                   (1 - RATE_WEIGHT) * self.scan_seconds_per_pixel
                                                   + RATE_WEIGHT * measured)

        return await self.admission.run(timed, cost_s=estimate.scan_pixels * rate)

    # --- POST /detect ---

    async def inline_turn(self, payloads: list[Payload]) -> bool:
        """Whether this request's work is done on the event loop: its files are few enough bytes to hold at most
        FACEDET_INLINE_MAX_PIXELS, and it has had its turn (Admission.inline_turn; a larger one never waits)."""
        return may_be_small(payloads, self.settings.inline_max_pixels) and await self.admission.inline_turn()

    async def find_faces(self, model: str, payloads: list[Payload], ask: FindFaces) -> list[Answer]:
        """Every image's faces. Crops (no side over the manifest's crop_max_side) are classified whole, in one
        batch, as before, and answer with the centre square as their box; photos are scanned (service/localiser.py)."""
        if not ask.boxes:
            threshold = self.crop_threshold(model, ask)
            return [Answer(float(p), threshold, None) for p in await self.detect(model, payloads)]
        crop_side = self.runtime.manifest.localiser.crop_max_side
        batcher, images = self.batchers.get(model), None
        if batcher is not None:  # crops go through the micro-batcher as with boxes=false; photos are scanned
            images = self.open_all(payloads)
            sizes = [oriented_size(im, label) for label, im in images]
            if all(max(size) <= crop_side for size in sizes):
                with self.reserve(images):
                    probabilities = await batcher.submit(payloads, len(payloads))
                return self._crop_answers(model, ask, sizes, probabilities)
        elif await self.inline_turn(payloads):
            with self.admission.inline():
                images = open_small(payloads, self.settings.inline_max_pixels, self.settings.max_image_pixels)
                if images is not None:
                    sizes = [oriented_size(im, label) for label, im in images]
                    if all(max(size) <= crop_side for size in sizes):  # small crops: answered here, as before
                        return self._crop_answers(model, ask, sizes,
                                                  self.runtime.classify(model, load_batch(images, self.size)))
        images = images if images is not None else self.open_all(payloads)
        with self.reserve(images, ask.min_face_size or self.runtime.manifest.localiser.min_face_size) as estimate:
            return await self.run_scans(estimate, self._find_faces, model, images, ask)

    def crop_threshold(self, model: str, ask: FindFaces) -> float:
        return self.runtime.threshold(model) if ask.threshold is None else ask.threshold

    def _crop_answers(self, model: str, ask: FindFaces, sizes: list[tuple[int, int]],
                      probabilities: np.ndarray) -> list[Answer]:
        threshold = self.crop_threshold(model, ask)
        return [Answer(float(p), threshold, np.array([[*centre_box(*size), p]]) if p >= threshold else np.zeros((0, 5)))
                for size, p in zip(sizes, probabilities)]

    def _find_faces(self, model: str, images: list[tuple[str, Image.Image]], ask: FindFaces) -> list[Answer]:
        """In the pool: decode the opened images, then classify the crops together and scan the photos one by one."""
        cfg = self.runtime.manifest.localiser
        answers: list[Answer | None] = [None] * len(images)
        crops: list[tuple[int, np.ndarray, tuple[int, int]]] = []
        for i, (label, im) in enumerate(images):
            size = oriented_size(im, label)
            if max(size) <= cfg.crop_max_side:
                crops.append((i, load(im, size=self.size, label=label), size))
            else:
                answers[i] = self.scan_photo(model, im, label, size, ask)
        if crops:
            probabilities = self.runtime.classify(model, to_model_input([c for _, c, _ in crops]))
            for (i, _, _), answer in zip(crops, self._crop_answers(model, ask, [s for _, _, s in crops], probabilities)):
                answers[i] = answer
        return answers

    def scan_photo(self, model: str, im: Image.Image, label: str, size: tuple[int, int], ask: FindFaces) -> Answer:
        cfg = self.runtime.manifest.localiser
        threshold = cfg.threshold if ask.threshold is None else ask.threshold
        min_face = ask.min_face_size or cfg.min_face_size
        # The pyramid's largest level is window / min_face of the photo: a JPEG need not decode larger than that.
        photo, factor = load_photo(im, smallest=min(1.0, cfg.window / min_face), label=label)
        found = locate(self.runtime, model, photo, threshold, max(1, round(min_face / factor)),
                       ask.max_faces or cfg.max_faces, self.settings.max_scan_pixels, ask.min_neighbours)
        boxes = found.boxes.copy()
        boxes[:, :4] *= factor
        return Answer(found.best, threshold, clip_boxes(boxes, *size))

    async def detect(self, model: str, payloads: list[Payload]) -> np.ndarray:
        """Face probabilities [N] for one request's images: on the event loop if they are small
        (FACEDET_INLINE_MAX_PIXELS), else in the pool, alone or in a micro-batch if that is enabled."""
        batcher = self.batchers.get(model)
        if batcher is not None:
            with self.reserve(self.open_all(payloads)):
                return await batcher.submit(payloads, len(payloads))
        if await self.inline_turn(payloads):
            with self.admission.inline():
                images = open_small(payloads, self.settings.inline_max_pixels, self.settings.max_image_pixels)
                if images is not None:  # small enough to be cheaper here than a round trip through the pool
                    return self.runtime.classify(model, load_batch(images, self.size))
        images = self.open_all(payloads)
        with self.reserve(images):
            return await self.admission.run(lambda: self.runtime.classify(model, load_batch(images, self.size)))

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

    def face_input(self, payload: Payload, box: Box | None) -> tuple[np.ndarray, FaceChoice]:
        """The face the DB-VAE works on: the box asked for, else the largest face the DB-VAE's localiser finds,
        else (a crop, or a photo without a face found) the centre square. Cut out as a square around the box,
        resized like every model input -> (uint8 [S, S, 3], which box and why)."""
        label, data = payload
        photo, _ = load_photo(open_image(data, max_pixels=self.settings.max_image_pixels, label=label), label=label)
        w, h = photo.size
        if box is not None:
            x, y, bw, bh = box
            if x + bw > w or y + bh > h:
                raise ProblemError(422, "validation-error", "Invalid request",
                                   f"{label}: box {x},{y},{bw},{bh} lies outside the {w}x{h} image")
            choice = FaceChoice(box, "request")
        elif max(w, h) <= self.runtime.manifest.localiser.crop_max_side:
            choice = FaceChoice(centre_box(w, h), "centre")
        else:
            cfg = self.runtime.manifest.localiser
            found = locate(self.runtime, "dbvae", photo, cfg.threshold, cfg.min_face_size, cfg.max_faces,
                           self.settings.max_scan_pixels).boxes
            if len(found):
                x, y, bw, bh, _ = found[np.argmax(found[:, 2] * found[:, 3])]
                choice = FaceChoice((int(x), int(y), int(bw), int(bh)), "found")
            else:
                choice = FaceChoice(centre_box(w, h), "centre")
        square = photo.crop(face_square(choice.box, w, h)).resize((self.size, self.size), Image.Resampling.BILINEAR)
        return np.asarray(square, dtype=np.uint8), choice

    async def reconstruct(self, payload: Payload, box: Box | None = None) -> tuple[bytes, FaceChoice]:
        """One image's face -> its DB-VAE reconstruction as a PNG. The latent mean, not a sample: the same
        upload always gives the same picture."""
        def job() -> tuple[bytes, FaceChoice]:
            face, choice = self.face_input(payload, box)
            return render.png(self.runtime.generate(self.runtime.encode(to_model_input([face])))[0]), choice

        with self.reserve(self.open_all([payload]), self.runtime.manifest.localiser.min_face_size) as estimate:
            return await self.run_scans(estimate, job)

    async def morph(self, a: Payload, b: Payload, steps: int, fmt: MorphFormat, box_a: Box | None = None,
                    box_b: Box | None = None) -> tuple[bytes | list[str], float, tuple[FaceChoice, FaceChoice]]:
        """Latent means of a's and b's faces, interpolated linearly over `steps` frames (both ends included) and
        decoded in one batch -> (PNG strip, GIF or base64 PNG frames; the distance between the two means;
        the faces used)."""
        def job() -> tuple[bytes | list[str], float, tuple[FaceChoice, FaceChoice]]:
            (face_a, choice_a), (face_b, choice_b) = self.face_input(a, box_a), self.face_input(b, box_b)
            mu = self.runtime.encode(to_model_input([face_a, face_b])).astype(np.float64)  # [2, D]
            t = np.linspace(0.0, 1.0, steps)[:, None]  # [steps, 1]
            frames = self.runtime.generate((1.0 - t) * mu[0] + t * mu[1])  # [steps, C, S, S]
            distance, choices = float(np.linalg.norm(mu[1] - mu[0])), (choice_a, choice_b)
            if fmt == "json":
                return (render.base64_pngs(frames), frame_distances(frames)), distance, choices
            return (render.gif(frames) if fmt == "gif" else render.png_strip(frames)), distance, choices

        with self.reserve(self.open_all([a, b]), self.runtime.manifest.localiser.min_face_size) as estimate:
            return await self.run_scans(estimate, job)
