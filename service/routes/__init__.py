"""One router per concern; service.main includes them all.

Path rule: the API a client programs against lives under /v1 (/v1/detect, /v1/reconstruct, /v1/morph,
/v1/models); the endpoints an orchestrator polls (/healthz, /readyz, /metrics) are unversioned, as
Kubernetes and Prometheus expect them. The unversioned upload paths that clients already call stay, marked
deprecated in the OpenAPI document.
"""

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter

from service.errors import problem_responses
from service.problems import ProblemError

API_PREFIX = "/v1"

# Every status an upload route can answer, so /docs and the OpenAPI document show the error shape and when.
UPLOAD_PROBLEMS = problem_responses(400, 413, 415, 422, 503, 500)
# Any route can meet a bug.
UNEXPECTED = problem_responses(500)


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
