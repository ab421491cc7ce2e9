"""POST /v1/detect: every face in one or more images (boxes and scores), or with boxes=false the single
centre-crop face probability per image of earlier releases."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import JSONResponse

from service.pipeline import Answer, FindFaces, Pipeline
from service.problems import ProblemError
from service.routes import UPLOAD_PROBLEMS, post_versioned
from service.schemas import DetectResponse
from service.settings import ModelName
from service.uploads import read

router = APIRouter(tags=["inference"])


@post_versioned(router, "/detect", response_model=DetectResponse, responses=UPLOAD_PROBLEMS,
                summary="Find the faces in each picture")
async def detect(
    request: Request,
    image: Annotated[list[UploadFile], File(description="An image; repeat the field to send a batch")],
    model: Annotated[ModelName | None, Query(
        description="Which classifier answers; default FACEDET_DEFAULT_MODEL (dbvae)",
        openapi_examples={"DB-VAE": {"value": "dbvae"}, "standard CNN": {"value": "cnn"}},
    )] = None,
    min_face_size: Annotated[int | None, Query(ge=8, le=100_000, description=(
        "Smallest face to look for, px of the image; default the manifest's localiser.min_face_size (40). "
        "Smaller is slower: the photo is scanned at window / min_face_size of its size first"))] = None,
    max_faces: Annotated[int | None, Query(ge=1, le=1000, description="At most this many faces per image")] = None,
    min_neighbours: Annotated[int | None, Query(ge=1, le=100, description=(
        "Windows above the manifest's localiser.scan_threshold a candidate's merged box needs; default the "
        "manifest's localiser.min_neighbours. Higher: fewer candidates to verify, and fewer faces found"))] = None,
    threshold: Annotated[float | None, Query(ge=0.0, le=1.0, description=(
        "A face from this score on (for photos, the probability of the refined candidate's 64x64 crop); default "
        "the manifest's localiser threshold for photos and the model's threshold for crops (images no larger "
        "than localiser.crop_max_side)"))] = None,
    boxes: Annotated[bool, Query(description=(
        "false: no localisation, one probability per image from its centre square (the answer before /v1)"))] = True,
) -> JSONResponse:
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
        ask = FindFaces(boxes, threshold, min_face_size, max_faces, min_neighbours)
        answers = await pipeline.find_faces(name, payloads, ask)
    runtime = pipeline.runtime
    # Built as plain JSON: this is the hot path, and validating our own answer through the nested response
    # model cost ~10% of /detect's requests/s on a 64x64 PNG (bench/load.py). DetectResponse documents it.
    return JSONResponse({
        "model": name,
        "model_version": runtime.manifest.models[name].version,
        "threshold": runtime.threshold(name),
        "provider": runtime.provider(name),
        "results": [detection(upload.filename, answer) for upload, answer in zip(image, answers)],
    })


def detection(filename: str | None, answer: Answer) -> dict:
    """One image's entry of DetectResponse.results (schemas.Detection)."""
    faces = None if answer.faces is None else [
        {"box": {"x": int(x), "y": int(y), "width": int(w), "height": int(h)}, "score": float(score)}
        for x, y, w, h, score in answer.faces]
    is_face = bool(faces) if faces is not None else bool(answer.probability >= answer.threshold)
    return {"filename": filename, "face_probability": float(answer.probability), "is_face": is_face,
            "threshold": float(answer.threshold), "faces": faces}
