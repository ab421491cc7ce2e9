"""POST /reconstruct: the DB-VAE's reconstruction of one image, as a PNG."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Response, UploadFile

from service import render
from service.deps import AdmittedEngineDep, SettingsDep
from service.routes import UPLOAD_PROBLEMS
from service.uploads import decode_batch, read

router = APIRouter(tags=["inference"])


@router.post("/reconstruct", response_class=Response, summary="Encode then decode one image with the DB-VAE",
             responses={200: {"content": {"image/png": {}}, "description": "size x size RGB PNG"},
                        **UPLOAD_PROBLEMS})
async def reconstruct(
    engine: AdmittedEngineDep,
    settings: SettingsDep,
    image: Annotated[UploadFile, File(description="The image to reconstruct")],
) -> Response:
    payload = await read(image, "image")

    def job() -> bytes:
        batch = decode_batch([payload], engine.size, settings.max_image_pixels)
        # The latent mean, not a sample: the same upload always gives the same picture.
        return render.png(engine.decode(engine.encode(batch))[0])

    content = await engine.call(job)
    return Response(content, media_type="image/png",
                    headers={"X-Model-Version": engine.manifest.models["dbvae"].version})
