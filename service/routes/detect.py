"""POST /v1/detect: face probability for one or more images, in one batched inference."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, Request, UploadFile

from service.pipeline import Pipeline
from service.problems import ProblemError
from service.routes import UPLOAD_PROBLEMS, post_versioned
from service.schemas import DetectResponse, Detection
from service.settings import ModelName
from service.uploads import read

router = APIRouter(tags=["inference"])


@post_versioned(router, "/detect", response_model=DetectResponse, responses=UPLOAD_PROBLEMS,
                summary="Is each picture a face?")
async def detect(
    request: Request,
    image: Annotated[list[UploadFile], File(description="An image; repeat the field to send a batch")],
    model: Annotated[ModelName | None, Query(
        description="Which classifier answers; default FACEDET_DEFAULT_MODEL (dbvae)",
        openapi_examples={"DB-VAE": {"value": "dbvae"}, "standard CNN": {"value": "cnn"}},
    )] = None,
) -> DetectResponse:
    # The upload routes take no Depends(): FastAPI solves each dependency per request (~20 us of event-loop
    # time apiece), a measurable share of /detect's cost under load (bench/load.py). Same object, read directly.
    pipeline: Pipeline = request.app.state.pipeline
    limit = pipeline.settings.max_images_per_request
    if len(image) > limit:
        raise ProblemError(422, "too-many-images", "Too many images",
                           f"{len(image)} images sent; at most {limit} per request (FACEDET_MAX_IMAGES_PER_REQUEST)")
    name = model or pipeline.settings.default_model
    async with pipeline.admission.admit():
        payloads = [await read(upload, f"image[{i}]") for i, upload in enumerate(image)]
        probabilities = await pipeline.detect(name, payloads)
    runtime = pipeline.runtime
    threshold = runtime.threshold(name)
    return DetectResponse(
        model=name,
        model_version=runtime.manifest.models[name].version,
        threshold=threshold,
        provider=runtime.provider(name),
        results=[Detection(filename=upload.filename, face_probability=float(p), is_face=bool(p >= threshold))
                 for upload, p in zip(image, probabilities)],
    )
