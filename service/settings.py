"""The one settings object, read from FACEDET_* environment variables and validated at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import onnxruntime as ort
from PIL import Image
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The models committed with the repository (baked into the image at /app/models).
DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
ModelName = Literal["dbvae", "cnn"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEDET_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Worker processes on the one port (service/workers.py), each a whole service with its own ONNX Runtime
    # sessions. None ("auto", the default): one per usable core (service/cores.py: the CPU affinity capped by the
    # cgroup CPU quota), or 1 when the models run on a provider other than CPU (a GPU context per worker). 1: this
    # process alone, no supervisor.
    workers: int | None = Field(None, ge=1, le=512)
    # With several workers, each listens on its own socket of the port (SO_REUSEPORT, Linux) and the kernel spreads
    # new connections over them by a hash of their addresses. false: one socket shared by every worker, where the
    # worker that wakes first accepts every connection waiting, so connections that open together can mostly land
    # on one worker (service/workers.py).
    reuse_port: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # One log line per request (uvicorn's access log). Off by default: at ~1,000 requests/s it took about a
    # sixth of the event loop's time (py-spy under bench/load.py), and /metrics counts every request anyway.
    access_log: bool = False
    models_dir: Path = DEFAULT_MODELS_DIR
    default_model: ModelName = "dbvae"
    # Order of preference; unavailable ones are skipped and ORT always keeps CPU as the last resort.
    providers: Annotated[list[str], NoDecode] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    require_gpu: bool = False
    threshold: float | None = Field(None, ge=0.0, le=1.0)
    max_upload_bytes: int = Field(10_000_000, ge=1024)
    # Pillow itself only warns up to twice its own limit; ours must sit at or under that limit.
    max_image_pixels: int = Field(50_000_000, ge=64 * 64, le=Image.MAX_IMAGE_PIXELS)
    max_images_per_request: int = Field(16, ge=1, le=256)
    max_morph_steps: int = Field(32, ge=2, le=256)
    # The largest pyramid level /detect scans, in pixels (its float32 copy and the first conv's activations are
    # what a photo costs): a photo that would need more is scanned for larger faces only. 8 M lets a 1920x1280
    # photo be searched for 40 px faces (level 0 is 1.6x: 6.3 M pixels).
    max_scan_pixels: int = Field(8_000_000, ge=64 * 64, le=100_000_000)
    # Scan pyramid levels with a model's level scan (training/level_scan.py: half the level size, int8) where its
    # manifest has one; false: with the float32 fast scan, as before it. Found faces are scored alike either way.
    level_scan: bool = True
    # /detect requests whose images hold at most this many pixels together (64 x 64: the model's own input
    # size) are decoded and classified on the event loop: cheaper than the hand-off to a worker thread and
    # back (bench/load.py). Larger ones use the pool. 0: always the pool.
    # Memory, worked out per image from its header before decoding (service/budget.py: the decoded first frame,
    # its RGB copies and the pyramid scan). A request whose largest image would take more than this is refused
    # with 413 (its images are decoded one after another, so the largest counts). 256 MB admits a 12 MP phone
    # photo (~220 MB: 96 MB decoded, its 8 M-pixel level at 3 bytes a pixel, one 1 M-pixel scan band) and refuses a
    # 7000x7000 PNG (>= 490 MB) before decoding it.
    max_request_mb: int = Field(256, ge=64, le=65_536)
    # All in-flight requests together may hold this much (each reserves its estimate before decoding and gives it
    # back when done, errors included); a request that does not fit gets 503 + Retry-After at once rather than
    # queueing, and one estimated under 16 MB (a crop, a small photo) is never refused for it: small requests do
    # not wait behind big ones. 512: two requests at the per-request limit, one per default worker thread.
    memory_budget_mb: int = Field(512, ge=64, le=1_048_576)
    inline_max_pixels: int = Field(4096, ge=0, le=1_000_000)
    # ...but no more than this much of that work per turn of the event loop; the turn's other small requests wait
    # for later turns, in the order they came (service/admission.py). Unbounded, a saturated loop spent ~1 ms on
    # every ready request each turn, and a new connection waited through many such turns to be accepted and read
    # (bench/load.py, wrk at 64 connections: ~1 s). 0: never inline, every request takes the pool.
    inline_turn_budget_ms: float = Field(2.0, ge=0.0, le=60_000.0)
    # Per worker process, as are max_queue, memory_budget_mb and max_connections: N workers run N x worker_threads
    # inferences at once. intra_op_threads=0 gives every session one thread per core in every worker: with
    # several workers keep 1, or they contend for the same cores.
    worker_threads: int = Field(2, ge=1, le=64)
    intra_op_threads: int = Field(1, ge=0, le=64)
    max_queue: int = Field(64, ge=0, le=10_000)
    # A photo scan starts at once while a pool thread is free of photo work; past that it is queued only while the
    # photo work ahead of it (each queued or running scan's cost, estimated from its pyramid's pixels at the speed
    # measured on this host) would let it start within this many seconds, else 503 + Retry-After at once rather
    # than a wait of many seconds.
    max_queue_wait_s: float = Field(1.0, gt=0.0, le=600.0)
    # /detect micro-batching: concurrent requests share one inference of up to this many images (0: off),
    # waiting at most this long for company (0: only while every pool thread is busy). See service/batcher.py.
    micro_batch_max: int = Field(0, ge=0, le=256)
    micro_batch_wait_ms: float = Field(0.0, ge=0.0, le=60_000.0)
    retry_after_s: int = Field(1, ge=1, le=3600)
    # Every this many seconds, if requests were served since the last check and none is in flight, freed heap
    # memory goes back to the OS (glibc malloc_trim; service/memory.py). 0: never.
    memory_trim_s: float = Field(1.0, ge=0.0, le=3600.0)
    # Readiness answers 503 for this long after SIGTERM before the server stops accepting work,
    # so a load balancer has time to notice.
    shutdown_delay_s: float = Field(0.0, ge=0.0, le=300.0)
    graceful_timeout_s: float = Field(20.0, ge=0.0, le=600.0)
    # Connection limits, enforced by the HTTP protocol itself (service/http.py): uvicorn's httptools path has none.
    # The most bytes a request's header section (its field lines, not the request line, whose target the parser
    # already refuses at 64 KiB) may take before a 431; nginx and uvicorn's h11 path allow a few tens of kB.
    max_header_bytes: int = Field(32 * 1024, ge=1024, le=1024 * 1024)
    # A request's head must be in this many seconds after the connection opens (first request) or after its first
    # byte (later ones), else 408; a connection that sends nothing is closed then.
    header_timeout_s: float = Field(10.0, gt=0.0, le=600.0)
    # A request's whole body must be in this many seconds after its head, else 408: 60 s takes a full
    # FACEDET_MAX_UPLOAD_BYTES upload (10 MB) at 1.4 Mbit/s. Time the server itself stops reading is not counted.
    body_timeout_s: float = Field(60.0, gt=0.0, le=3600.0)
    # An idle kept-alive connection is closed after this many seconds (uvicorn's timeout_keep_alive).
    keepalive_s: float = Field(5.0, gt=0.0, le=600.0)
    # Requests on connections beyond this many open ones get a 503 (Retry-After) and a closed connection, except
    # GET /healthz, so liveness holds under a connection flood.
    max_connections: int = Field(1000, ge=1, le=100_000)

    @field_validator("workers", mode="before")
    @classmethod
    def _auto(cls, value: object) -> object:
        return None if isinstance(value, str) and value.strip().lower() == "auto" else value

    @field_validator("providers", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @field_validator("providers")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one execution provider is needed")
        unknown = [p for p in value if p not in ort.get_all_providers()]
        if unknown:
            raise ValueError(f"unknown ONNX Runtime provider(s) {unknown}")
        return value


    @model_validator(mode="after")
    def _budget_holds_a_request(self) -> Settings:
        if self.memory_budget_mb < self.max_request_mb:
            raise ValueError(f"FACEDET_MEMORY_BUDGET_MB={self.memory_budget_mb} is under FACEDET_MAX_REQUEST_MB="
                             f"{self.max_request_mb}: a request under the one would never fit the other")
        return self


class SettingsError(Exception):
    """A bad setting, already phrased as the one line the operator sees."""


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            problems.append(f"FACEDET_{field.upper()}={err.get('input')!r}: {err['msg']}")
        raise SettingsError("bad setting " + "; ".join(problems)) from None
