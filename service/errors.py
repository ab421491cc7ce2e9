"""Every error the app answers leaves as application/problem+json {type, title, status, detail}, and every status
an operation can answer is in the OpenAPI document with that body (problem_responses).

Some requests never reach the app. The HTTP protocol (service/http.py, on uvicorn's httptools parser) answers these
itself, as application/problem+json with `Connection: close`, and closes the connection:
- 431 header-too-large: a request head, less its request target, over FACEDET_MAX_HEADER_BYTES;
- 408 request-timeout: a head not in within FACEDET_HEADER_TIMEOUT_S, or a body not in within FACEDET_BODY_TIMEOUT_S
  of its head (a body shorter than its Content-Length followed by silence ends here); where a response has already
  started, the connection is only closed;
- 503 too-many-connections (Retry-After): a request on a connection opened beyond FACEDET_MAX_CONNECTIONS, except
  GET /healthz.
A connection that sends nothing within FACEDET_HEADER_TIMEOUT_S, or nothing more within FACEDET_KEEPALIVE_S after a
response, is closed without an answer.
uvicorn's parser itself answers these with a text/plain 400 "Invalid HTTP request received." and a closed connection:
- a request target (path and query string) of 65,536 bytes or more;
- a request that is not valid HTTP/1.1: bad bytes in the request line or a header name, a Content-Length that is
  not a number, Content-Length together with Transfer-Encoding, a bad chunk size;
- on a kept-alive connection, a body shorter than its Content-Length followed by more bytes (a next request):
  those bytes are read as the rest of the body and what is left of them does not parse; the short request itself
  gets no answer.
A body shorter than its Content-Length gets no answer at all when the client then closes (or half-closes) the
connection: the app sees the disconnect while parsing the form, with no one left to answer.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.problems import ProblemError
from service.schemas import Problem

log = logging.getLogger("service.errors")
PROBLEM_JSON = "application/problem+json"

# What each status means, as the OpenAPI document says it; a route words a status its own way where it differs.
WHEN: dict[int, str] = {
    400: "Malformed request body: multipart/form-data that cannot be parsed (no boundary, a broken part, a part "
         "without a name) or is over the form parser's limits (1,000 files, 1,000 fields, 1 MB in a non-file field)",
    413: "Upload over the byte cap (FACEDET_MAX_UPLOAD_BYTES), or an image over the pixel cap "
         "(FACEDET_MAX_IMAGE_PIXELS)",
    415: "Not a JPEG, PNG, WebP, GIF, BMP or TIFF image",
    422: "Missing file or wrong field name, empty or truncated image, too many images, a bad parameter",
    500: "A bug: the body carries only an error_id, under which the traceback is logged",
    503: "Overloaded: every worker thread and queue place is taken (FACEDET_WORKER_THREADS + FACEDET_MAX_QUEUE)",
}
# The headers that come with those meanings.
WHEN_HEADERS: dict[int, dict] = {
    503: {"Retry-After": {"description": "seconds to wait before retrying (FACEDET_RETRY_AFTER_S)",
                          "schema": {"type": "integer", "minimum": 1}, "required": True}},
}


def problem_responses(*statuses: int, described: dict[int, str] | None = None) -> dict[int | str, dict]:
    """OpenAPI `responses` for these statuses, each a problem+json body of the Problem schema.

    The schema is named by reference rather than through FastAPI's `model`, which would also list it under the
    route's own media type (application/json): install_handlers adds the component that the reference names.
    """
    described = described or {}
    responses: dict[int | str, dict] = {}
    for status in statuses:
        response = {"description": described.get(status, WHEN[status]),
                    "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        if status not in described and status in WHEN_HEADERS:
            response["headers"] = WHEN_HEADERS[status]
        responses[status] = response
    return responses


def problem_response(scope: Scope, status: int, slug: str, title: str, detail: str,
                     headers: dict[str, str] | None = None, **extra: Any) -> JSONResponse:
    metrics = getattr(getattr(scope.get("app"), "state", None), "metrics", None)
    if metrics is not None:
        metrics.errors.labels(type=slug).inc()
    body = {"type": f"urn:facedet:problem:{slug}", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


async def _problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(request.scope, exc.status, exc.slug, exc.title, exc.detail, exc.headers)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400:  # the only 400s: Starlette's form parser, or FastAPI failing to read the body
        media = request.headers.get("content-type", "").split(";")[0].strip() or "request"
        return problem_response(request.scope, 400, "malformed-body", "Malformed request body",
                                f"the {media} body cannot be parsed: {exc.detail}", exc.headers)
    slug = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}.get(exc.status_code,
                                                                                       f"http-{exc.status_code}")
    title = slug.replace("-", " ").capitalize()
    return problem_response(request.scope, exc.status_code, slug, title, str(exc.detail), exc.headers)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query"))
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return problem_response(request.scope, 422, "validation-error", "Invalid request", "; ".join(parts))


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _problem)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)
    _document_problem(app)


def _document_problem(app: FastAPI) -> None:
    """Add the Problem component that problem_responses refers to: FastAPI only lists the models routes pass it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:  # built once, then cached by FastAPI
            schemas = build().setdefault("components", {}).setdefault("schemas", {})
            schemas["Problem"] = Problem.model_json_schema()
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


class UnexpectedErrorMiddleware:
    """A bug becomes a 500 whose body carries only an id; the traceback goes to the log under that id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            error_id = uuid.uuid4().hex[:16]
            log.exception("unexpected error id=%s on %s %s", error_id, scope.get("method"), scope.get("path"))
            if started:  # nothing sensible can follow a half-sent response
                raise
            response = problem_response(scope, 500, "internal-error", "Internal server error",
                                        f"unexpected error; quote id {error_id} when reporting it",
                                        error_id=error_id)
            await response(scope, receive, send)
