"""One router per concern; service.main includes them all.

Path rule: the API a client programs against lives under /v1 (/v1/detect, /v1/reconstruct, /v1/morph,
/v1/models); the endpoints an orchestrator polls (/healthz, /readyz, /metrics) are unversioned, as
Kubernetes and Prometheus expect them. The unversioned upload paths that clients already call stay, marked
deprecated in the OpenAPI document.
"""

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter

from service.problems import ProblemError
from service.schemas import Problem

API_PREFIX = "/v1"

# Documented on every endpoint that takes uploads, so /docs shows the error shape and when it happens.
UPLOAD_PROBLEMS: dict[int | str, dict] = {
    413: {"model": Problem, "description": "Upload over the byte cap, or an image over the pixel cap",
          "content": {"application/problem+json": {}}},
    415: {"model": Problem, "description": "Not a JPEG, PNG, WebP, GIF, BMP or TIFF image",
          "content": {"application/problem+json": {}}},
    422: {"model": Problem, "description": "Missing file, empty or truncated image, bad parameter",
          "content": {"application/problem+json": {}}},
    503: {"model": Problem, "description": "Overloaded (see Retry-After) or not ready",
          "content": {"application/problem+json": {}}},
}


BOX_PATTERN = r"^\d{1,6},\d{1,6},\d{1,6},\d{1,6}$"
BOX_HELP = ("x,y,width,height of the face to use, in px of the image after EXIF orientation; default: the largest "
            "face found, else (a crop, or no face found) the centre square")


def parse_box(text: str | None, name: str) -> tuple[int, int, int, int] | None:
    """'x,y,w,h' (already matched against BOX_PATTERN) -> a box with a positive size, or a 422."""
    if text is None:
        return None
    x, y, w, h = (int(v) for v in text.split(","))
    if w < 1 or h < 1:
        raise ProblemError(422, "validation-error", "Invalid request", f"{name}: width and height must be >= 1")
    return x, y, w, h


def post_versioned(router: APIRouter, path: str, **kwargs: Any) -> Callable[[Callable], Callable]:
    """Register a POST handler at /v1<path> and, deprecated, at <path>."""
    def register(handler: Callable) -> Callable:
        router.post(API_PREFIX + path, **kwargs)(handler)
        router.post(path, deprecated=True, **kwargs)(handler)
        return handler

    return register
