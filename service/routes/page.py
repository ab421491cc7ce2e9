"""GET /: the page to try the models in a browser (service/static/), kept out of the OpenAPI document.

Only the files named below are served, so no path from a request ever reaches the file system. The page
fetches nothing from elsewhere (the service runs offline), and the Content-Security-Policy makes the browser
hold it to that.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from service.problems import ProblemError

router = APIRouter(include_in_schema=False)
STATIC = Path(__file__).resolve().parent.parent / "static"
FILES = {"app.js": "text/javascript", "style.css": "text/css"}
# blob: for the uploaded photos and the API's PNG/GIF answers, data: for the morph's base64 frames,
# mediastream: for the camera preview.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; "
                               "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    # Small files: always revalidated (ETag), so a new release's page never runs with the old script.
    "Cache-Control": "no-cache",
}


@router.get("/")
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=HEADERS)


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    if name not in FILES:
        raise ProblemError(404, "not-found", "Not found", f"no static file {name!r}")
    return FileResponse(STATIC / name, media_type=FILES[name], headers=HEADERS)
