"""Every error leaves as application/problem+json {type, title, status, detail}."""

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

log = logging.getLogger("service.errors")
PROBLEM_JSON = "application/problem+json"


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
