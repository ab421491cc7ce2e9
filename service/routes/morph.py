"""POST /v1/morph: walk the DB-VAE's latent space from image a to image b."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, Request, Response, UploadFile

from service.pipeline import MorphFormat, Pipeline
from service.problems import ProblemError
from service.routes import BOX_HELP, BOX_PATTERN, UPLOAD_PROBLEMS, parse_box, post_versioned
from service.schemas import Box, FaceUsed, MorphFrames
from service.uploads import read

router = APIRouter(tags=["inference"])
MEDIA = {"png": "image/png", "gif": "image/gif"}


@post_versioned(router, "/morph", summary="Interpolate between two faces in latent space", response_model=None,
                responses={200: {"description": "png: one strip, a on the left; gif: animation a -> b -> a, looping; "
                                                "json: frames and their distances to both ends",
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
    box_a: Annotated[str | None, Query(pattern=BOX_PATTERN, description="a's face: " + BOX_HELP)] = None,
    box_b: Annotated[str | None, Query(pattern=BOX_PATTERN, description="b's face: " + BOX_HELP)] = None,
) -> Response | MorphFrames:
    pipeline: Pipeline = request.app.state.pipeline
    limit = pipeline.settings.max_morph_steps
    if not 2 <= steps <= limit:
        raise ProblemError(422, "validation-error", "Invalid request", f"steps: must be between 2 and {limit}, got {steps}")
    face_a, face_b = parse_box(box_a, "box_a"), parse_box(box_b, "box_b")
    async with pipeline.admission.admit():
        payload_a, payload_b = await read(a, "a"), await read(b, "b")
        content, distance, (choice_a, choice_b) = await pipeline.morph(payload_a, payload_b, steps, format,
                                                                       face_a, face_b)
    version = pipeline.runtime.manifest.models["dbvae"].version
    if isinstance(content, tuple):
        frames, frame_distances = content
        return MorphFrames(model_version=version, steps=steps, size=pipeline.size, latent_distance=distance,
                           frames=frames, frame_distances=frame_distances, box_a=FaceUsed(box=Box.from_tuple(choice_a.box), source=choice_a.source),
                           box_b=FaceUsed(box=Box.from_tuple(choice_b.box), source=choice_b.source))
    return Response(content, media_type=MEDIA[format],
                    headers={"X-Model-Version": version, "X-Latent-Distance": f"{distance:.6g}",
                             "X-Face-Box-A": choice_a.header(), "X-Face-Source-A": choice_a.source,
                             "X-Face-Box-B": choice_b.header(), "X-Face-Source-B": choice_b.source})
