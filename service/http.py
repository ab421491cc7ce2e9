"""uvicorn's httptools protocol with the limits it lacks: header size, header and body timeouts, a connection cap.

uvicorn's h11 path caps a request's head, but the httptools path that `python -m service` runs has no cap and no
time limit for it: a client could send header bytes forever, open a connection and say nothing, or stop halfway
through a body, and the server would hold the memory and the connection. Here the server answers itself, before the
app (or instead of it), with problem+json and `Connection: close`:
- 431 when a request's head, less its request target, passes FACEDET_MAX_HEADER_BYTES (the method and version, every
  header line and the blank line count; the target is the parser's: 65,536 bytes or more is its 400);
- 408 when a request's head is not in FACEDET_HEADER_TIMEOUT_S after the connection opened (first request) or after
  its first byte (later ones), or its body is not in FACEDET_BODY_TIMEOUT_S after the head; a connection that has
  sent nothing by then is closed without an answer;
- 503 (Retry-After) to a request on a connection opened while FACEDET_MAX_CONNECTIONS others were open, as long
  as that many still are, except GET /healthz: liveness holds under a connection flood.
Idle kept-alive connections are uvicorn's own timeout_keep_alive (FACEDET_KEEPALIVE_S).

httptools gathers a header's name and value inside the parser and hands them over only once complete, so header
bytes are counted here on the raw bytes, fed to the parser no more than the cap allows at a time. A pipelined
request's first bytes, read together with the end of the request before, are not counted: at most one read (about 256 kB).
"""

from __future__ import annotations

import json
import logging
from asyncio import TimerHandle, Transport
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.errors import PROBLEM_JSON, problem_response
from service.settings import Settings

log = logging.getLogger("service.http")

# After its own answer the server half-closes and reads (and drops) what the client still sends for this long
# before closing: closing a socket with unread bytes sends a reset, which can destroy the answer on its way.
LINGER_S = 1.0
# How soon an expired body deadline is looked at again while the server itself has stopped reading (the app has
# not taken the buffered body yet, or a pipelined request waits for the one before): that wait is not the client's.
RECHECK_S = 1.0
LIVENESS = b"/healthz"


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    retry_after_s: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(settings.max_header_bytes, settings.header_timeout_s, settings.body_timeout_s,
                   settings.max_connections, settings.retry_after_s)


def protocol_class(settings: Settings) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for `uvicorn.Config(http=...)`: uvicorn builds one per connection, with its own arguments."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": HttpLimits.from_settings(settings)})


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[HttpLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # reading a request's head (or waiting for the next request's first byte)
        self._head_bytes = 0  # raw bytes of this head so far, request line included
        self._url_bytes = 0  # of which the request target: bounded by the parser, not counted against the cap
        self._timer: TimerHandle | None = None  # the header deadline, the body deadline, or the linger
        self._refused = False  # answered here: whatever the client still sends is dropped unread
        self._over_cap = False  # opened while FACEDET_MAX_CONNECTIONS others were: its requests may get a 503

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._over_cap = len(self.connections) > self.limits.max_connections
        self._arm(self.limits.header_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        limit = self.limits.max_header_bytes
        while data and self._in_head and not self.transport.is_closing():
            if self._timer is None:  # the first byte of a request on a kept-alive connection
                self._arm(self.limits.header_timeout_s, self._head_timed_out)
            # No more than the cap still allows: a head that has not ended when the cap is reached would pass it.
            room = limit - (self._head_bytes - self._url_bytes)
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self._in_head and self._head_bytes - self._url_bytes >= limit:
                self._refuse(431, "header-too-large", "Request header fields too large",
                             f"the request's header section exceeds the {limit}-byte limit (FACEDET_MAX_HEADER_BYTES)")
                return
        if data and not self.transport.is_closing():  # a body, and whatever follows it in the same read
            super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url_bytes = 0
        if self._timer is None:  # a pipelined request that began in the same read as the end of the one before
            self._arm(self.limits.header_timeout_s, self._head_timed_out)

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._url_bytes += len(url)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._in_head = False
        cycle, app = self.cycle, self.app
        # Connections already served keep being served; a late one is refused while the crowd lasts.
        if (self._over_cap and len(self.connections) > self.limits.max_connections
                and not self._is_liveness_probe()):
            self.app = self._too_many_connections  # for this request only: uvicorn reads self.app just below
        try:
            super().on_headers_complete()
        finally:
            self.app = app
        if self.cycle is not cycle:  # a request for the app, not a protocol upgrade: its body now has a deadline
            self._arm(self.limits.body_timeout_s, self._body_timed_out)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self._in_head, self._head_bytes = True, 0

    def _is_liveness_probe(self) -> bool:
        return self.parser.get_method() in (b"GET", b"HEAD") and httptools.parse_url(self.url).path == LIVENESS

    async def _too_many_connections(self, scope: Any, receive: Any, send: Any) -> None:
        log.info("503 to %s: more than %d connections open", self._peer(), self.limits.max_connections)
        await problem_response(scope, 503, "too-many-connections", "Too many connections",
                               f"more than {self.limits.max_connections} connections are open "
                               "(FACEDET_MAX_CONNECTIONS); retry shortly",
                               headers={"Retry-After": str(self.limits.retry_after_s), "Connection": "close"}
                               )(scope, receive, send)

    def _head_timed_out(self) -> None:
        self._timer = None
        if self._head_bytes == 0:  # not one byte of a request: an idle connection, nobody waits for an answer
            self.transport.close()
            return
        self._refuse(408, "request-timeout", "Request timeout", "the request's head did not arrive within "
                     f"{self.limits.header_timeout_s:g} s (FACEDET_HEADER_TIMEOUT_S)")

    def _body_timed_out(self) -> None:
        self._timer = None
        if getattr(self.flow, "read_paused", False):
            self._arm(min(RECHECK_S, self.limits.body_timeout_s), self._body_timed_out)
            return
        self._refuse(408, "request-timeout", "Request timeout", "the request's body did not arrive within "
                     f"{self.limits.body_timeout_s:g} s of its head (FACEDET_BODY_TIMEOUT_S)")

    def _refuse(self, status: int, slug: str, title: str, detail: str) -> None:
        """Answer `status` as problem+json and close, or only close where a response is already on its way."""
        log.info("%d to %s: %s", status, self._peer(), detail)
        cycle = self.cycle
        # A response already on its way (a pipelined predecessor's, or this request's own, such as an early 413)
        # leaves nothing to add: only close.
        if cycle is not None and (not cycle.response_complete if self._in_head else cycle.response_started):
            self.transport.close()
            return
        if not self._in_head:  # the app, still waiting for this body, gets a disconnect and writes nothing
            cycle.disconnected = True
            cycle.message_event.set()
        body = json.dumps({"type": f"urn:facedet:problem:{slug}", "title": title, "status": status,
                           "detail": detail}, ensure_ascii=False, separators=(",", ":")).encode()
        head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [f"content-type: {PROBLEM_JSON}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()]
        self.transport.write(b"".join(head) + body)
        self._refused = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._arm(LINGER_S, self.transport.close)

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "?"
