"""POST /v1/reconstruct: the DB-VAE's reconstruction of one image, as a PNG."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Request, Response, UploadFile

from service.pipeline import Pipeline
from service.routes import UPLOAD_PROBLEMS, post_versioned
from service.uploads import read

router = APIRouter(tags=["inference"])


@post_versioned(router, "/reconstruct", response_class=Response,
                summary="Encode then decode one image with the DB-VAE",
                responses={200: {"content": {"image/png": {}}, "description": "size x size RGB PNG"},
                           **UPLOAD_PROBLEMS})
async def reconstruct(
    request: Request,
    image: Annotated[UploadFile, File(description="The image to reconstruct")],
) -> Response:
    pipeline: Pipeline = request.app.state.pipeline
    async with pipeline.admission.admit():
        payload = await read(image, "image")
        content = await pipeline.reconstruct(payload)
    return Response(content, media_type="image/png",
                    headers={"X-Model-Version": pipeline.runtime.manifest.models["dbvae"].version})
