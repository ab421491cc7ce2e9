"""POST /morph: walk the DB-VAE's latent space from image a to image b."""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, File, Query, Response, UploadFile

from service import render
from service.deps import AdmittedEngineDep, SettingsDep
from service.errors import ProblemError
from service.routes import UPLOAD_PROBLEMS
from service.schemas import MorphFrames
from service.uploads import decode_batch, read

router = APIRouter(tags=["inference"])
MEDIA = {"png": "image/png", "gif": "image/gif"}


@router.post("/morph", summary="Interpolate between two faces in latent space", response_model=None,
             responses={200: {"description": "png: one strip, a on the left; gif: animation; json: frames",
                              "content": {"image/png": {}, "image/gif": {},
                                          "application/json": {"schema": MorphFrames.model_json_schema()}}},
                        **UPLOAD_PROBLEMS})
async def morph(
    engine: AdmittedEngineDep,
    settings: SettingsDep,
    a: Annotated[UploadFile, File(description="First face (frame 0)")],
    b: Annotated[UploadFile, File(description="Second face (last frame)")],
    steps: Annotated[int, Query(description="Frames, a and b included (2..FACEDET_MAX_MORPH_STEPS)",
                                openapi_examples={"default": {"value": 8}})] = 8,
    format: Annotated[Literal["png", "gif", "json"], Query(description="png strip, animated gif or json")] = "png",
) -> Response | MorphFrames:
    if not 2 <= steps <= settings.max_morph_steps:
        raise ProblemError(422, "validation-error", "Invalid request",
                           f"steps: must be between 2 and {settings.max_morph_steps}, got {steps}")
    payloads = [await read(a, "a"), await read(b, "b")]

    def job() -> tuple[bytes | list[str], float]:
        mu = engine.encode(decode_batch(payloads, engine.size, settings.max_image_pixels)).astype(np.float64)
        t = np.linspace(0.0, 1.0, steps)[:, None]
        frames = engine.decode((1.0 - t) * mu[0] + t * mu[1])
        distance = float(np.linalg.norm(mu[1] - mu[0]))
        if format == "json":
            return render.base64_pngs(frames), distance
        return (render.gif(frames) if format == "gif" else render.png_strip(frames)), distance

    content, distance = await engine.call(job)
    version = engine.manifest.models["dbvae"].version
    if isinstance(content, list):
        return MorphFrames(model_version=version, steps=steps, size=engine.size, latent_distance=distance,
                           frames=content)
    return Response(content, media_type=MEDIA[format],
                    headers={"X-Model-Version": version, "X-Latent-Distance": f"{distance:.6g}"})
