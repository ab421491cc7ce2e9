"""POST /v1/reconstruct: the DB-VAE's reconstruction of one image, as a PNG."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, Request, Response, UploadFile

from service.pipeline import Pipeline
from service.routes import BOX_HELP, BOX_PATTERN, UPLOAD_PROBLEMS, parse_box, post_versioned
from service.uploads import read

router = APIRouter(tags=["inference"])


@post_versioned(router, "/reconstruct", response_class=Response,
                summary="Encode then decode one image's face with the DB-VAE",
                responses={200: {"content": {"image/png": {}}, "description": (
                    "size x size RGB PNG; X-Face-Box: x,y,width,height used; X-Face-Source: request | found | centre")},
                           **UPLOAD_PROBLEMS})
async def reconstruct(
    request: Request,
    image: Annotated[UploadFile, File(description="The image whose face to reconstruct")],
    box: Annotated[str | None, Query(pattern=BOX_PATTERN, description=BOX_HELP)] = None,
) -> Response:
    pipeline: Pipeline = request.app.state.pipeline
    face = parse_box(box, "box")
    async with pipeline.admission.admit():
        payload = await read(image, "image")
        content, choice = await pipeline.reconstruct(payload, face)
    return Response(content, media_type="image/png",
                    headers={"X-Model-Version": pipeline.runtime.manifest.models["dbvae"].version,
                             "X-Face-Box": choice.header(), "X-Face-Source": choice.source})
