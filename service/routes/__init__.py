"""One router per concern; service.main includes them all."""

from service.schemas import Problem

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
