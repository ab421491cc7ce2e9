"""The two reference servers of bench/load.py, each run as its own uvicorn process (never part of the product).

    python -m bench.load_peers floor --port 8101
    python -m bench.load_peers naive --port 8102 [--checkpoint checkpoints/dbvae.pt]

* floor — a bare FastAPI endpoint that accepts the same multipart upload (FastAPI parses the form, as it
  does for /v1/detect) and returns a constant JSON: what the framework alone costs per request.
* naive — what a user would write by hand: a sync FastAPI endpoint that decodes the upload with Pillow
  (RGB, centre square crop, bilinear 64x64: the same pre-processing as the service, so the answers are
  comparable), runs the DB-VAE encoder eagerly in PyTorch from the training checkpoint, one request at a
  time (a lock: a PyTorch module shared by FastAPI's thread pool is not made for concurrent calls), with
  PyTorch's default threads.
"""

from __future__ import annotations

import argparse
import io
import threading
from pathlib import Path
from typing import Annotated

import uvicorn
from fastapi import FastAPI, File, UploadFile


def floor_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/detect")
    async def detect(image: Annotated[list[UploadFile], File()]) -> dict:
        return {"model": "floor", "results": [{"filename": "x", "face_probability": 0.5, "is_face": True}]}

    @app.get("/readyz")
    async def readyz() -> dict:
        return {"ready": True}

    return app


def naive_app(checkpoint: Path) -> FastAPI:
    import numpy as np
    import torch
    from PIL import Image

    from training.checkpoint import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    lock = threading.Lock()
    app = FastAPI()

    @app.post("/v1/detect")
    def detect(image: Annotated[list[UploadFile], File()]) -> dict:
        results = []
        for upload in image:
            im = Image.open(io.BytesIO(upload.file.read())).convert("RGB")
            w, h = im.size
            s = min(w, h)
            im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
            im = im.resize((64, 64), Image.Resampling.BILINEAR)
            x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
            with lock, torch.inference_mode():
                logit = model.encode(x)[0]
            p = float(torch.sigmoid(logit)[0])
            results.append({"filename": upload.filename, "face_probability": p, "is_face": p >= 0.5})
        return {"model": "dbvae-pytorch-eager", "results": results}

    @app.get("/readyz")
    def readyz() -> dict:
        return {"ready": True}

    return app


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.load_peers", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["floor", "naive"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--checkpoint", default="checkpoints/dbvae.pt")
    args = ap.parse_args(argv)
    app = floor_app() if args.kind == "floor" else naive_app(Path(args.checkpoint))
    # Same server settings as `python -m service`: one uvicorn process, the event loop and HTTP parser uvicorn
    # picks (uvloop and httptools, from the service extra), no access log (warning level).
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
