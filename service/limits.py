"""Request body byte cap, enforced while the body streams in.

Neither FastAPI's form parsing nor python-multipart caps a file part, so without this an upload of any
size would be spooled to disk before a handler could look at it.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import problem_response


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the {limit}-byte limit (FACEDET_MAX_UPLOAD_BYTES)")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = BodyTooLarge(self.max_bytes)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            # Refuse on the header alone: not one byte of the body is read.
            await problem_response(scope, 413, "payload-too-large", "Payload too large",
                                   str(too_large.detail))(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException is the one error FastAPI's body reader lets through unchanged,
                    # so it reaches the problem handler as a 413 rather than a generic 400.
                    raise too_large
            return message

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await problem_response(scope, 413, "payload-too-large", "Payload too large",
                                   str(too_large.detail))(scope, receive, send)
