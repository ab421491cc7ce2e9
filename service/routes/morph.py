"""POST /v1/morph: walk the DB-VAE's latent space from image a to image b."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, Request, Response, UploadFile

from service.pipeline import MorphFormat, Pipeline
from service.problems import ProblemError
from service.routes import UPLOAD_PROBLEMS, post_versioned
from service.schemas import MorphFrames
from service.uploads import read

router = APIRouter(tags=["inference"])
MEDIA = {"png": "image/png", "gif": "image/gif"}


@post_versioned(router, "/morph", summary="Interpolate between two faces in latent space", response_model=None,
                responses={200: {"description": "png: one strip, a on the left; gif: animation; json: frames",
                                 "content": {"image/png": {}, "image/gif": {},
                                             "application/json": {"schema": MorphFrames.model_json_schema()}}},
                           **UPLOAD_PROBLEMS})
async def morph(
    request: Request,
    a: Annotated[UploadFile, File(description="First face (frame 0)")],
    b: Annotated[UploadFile, File(description="Second face (last frame)")],
    steps: Annotated[int, Query(description="Frames, a and b included (2..FACEDET_MAX_MORPH_STEPS)",
                                openapi_examples={"default": {"value": 8}})] = 8,
    format: Annotated[MorphFormat, Query(description="png strip, animated gif or json")] = "png",
) -> Response | MorphFrames:
    pipeline: Pipeline = request.app.state.pipeline
    limit = pipeline.settings.max_morph_steps
    if not 2 <= steps <= limit:
        raise ProblemError(422, "validation-error", "Invalid request", f"steps: must be between 2 and {limit}, got {steps}")
    async with pipeline.admission.admit():
        payload_a, payload_b = await read(a, "a"), await read(b, "b")
        content, distance = await pipeline.morph(payload_a, payload_b, steps, format)
    version = pipeline.runtime.manifest.models["dbvae"].version
    if isinstance(content, list):
        return MorphFrames(model_version=version, steps=steps, size=pipeline.size, latent_distance=distance,
                           frames=content)
    return Response(content, media_type=MEDIA[format],
                    headers={"X-Model-Version": version, "X-Latent-Distance": f"{distance:.6g}"})
