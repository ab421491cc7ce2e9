"""Schemathesis against the real server (`python -m service` on the committed models): whatever it is sent,
every operation answers as its OpenAPI document says: no server error, a documented status, a documented content
type, a body of the documented schema, the documented headers.

Bounded and repeatable: a fixed seed with deterministic generation, a few examples per operation in each of
schemathesis' phases (the schema's examples, its coverage cases, then fuzzing), a per-example deadline and a
per-request timeout. Skipped only while models/manifest.json does not exist yet.

The last tests pin where the contract ends: what uvicorn answers itself, before the app (service/errors.py).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.main import create_app
from service.settings import Settings
from tests.utils.server import ServerProcess, serving

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
pytestmark = pytest.mark.skipif(not (MODELS / "manifest.json").exists(),
                                reason="models/manifest.json is not there yet (training exports it)")

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
CONFIG = schemathesis.Config.from_dict({"seed": 20260101, "generation": {"max-examples": 20, "deterministic": True}})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with serving({"FACEDET_MODELS_DIR": str(MODELS)}, tmp_path_factory.mktemp("schema") / "server.log") as proc:
        yield proc


def document() -> dict:
    """The OpenAPI document, built as the server builds it, without loading a model: the cases must exist when
    pytest collects them, before any server runs. test_the_server_serves_this_document ties it to the server's."""
    return create_app(Settings(models_dir=MODELS, providers=["CPUExecutionProvider"])).openapi()


def with_image_samples(document: dict) -> dict:
    """The document with its file parts also marked `format: binary`, OpenAPI 3.0's name for 3.1's
    contentMediaType application/octet-stream: only for that format does schemathesis mix real PNG, JPEG, GIF and
    WebP files into the bytes it uploads, so that some requests get past decoding to a 200 and its schema."""
    for component in document["components"]["schemas"].values():
        for field in component.get("properties", {}).values():
            for part in (field, field.get("items", {})):
                if part.get("contentMediaType") == "application/octet-stream":
                    part["format"] = "binary"
    return document


schema = schemathesis.openapi.from_dict(with_image_samples(document()), config=CONFIG)


def test_the_server_serves_this_document(server: ServerProcess) -> None:
    assert httpx.get(f"{server.url}/openapi.json").json() == document()


@schema.parametrize()
# No example database: the seed alone decides what is sent, never failures replayed from earlier runs.
@settings(deadline=5000, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_every_operation_answers_as_documented(case, server: ServerProcess) -> None:
    case.call_and_validate(base_url=server.url, checks=CHECKS, timeout=20)


def exchange(server: ServerProcess, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """One raw HTTP/1.1 request -> (status line, headers, body), read until the server closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(request)
        conn.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    return status, {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}, body


def test_malformed_multipart_on_the_wire_is_a_problem(server: ServerProcess) -> None:
    body = b"--abc\r\nno colon here\r\n\r\nx\r\n--abc--\r\n"
    status, headers, reply = exchange(server, b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                      b"Content-Type: multipart/form-data; boundary=abc\r\n"
                                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    assert status == "HTTP/1.1 400 Bad Request" and headers["content-type"] == "application/problem+json"
    assert b'"type":"urn:facedet:problem:malformed-body"' in reply


@pytest.mark.parametrize(("target_bytes", "status", "content_type"), [
    (65_535, "HTTP/1.1 404 Not Found", "application/problem+json"),  # the longest target the app still sees
    (65_536, "HTTP/1.1 400 Bad Request", "text/plain; charset=utf-8"),
])
def test_the_server_itself_refuses_a_request_target_of_64_kib(server: ServerProcess, target_bytes: int,
                                                              status: str, content_type: str) -> None:
    target = b"/" + b"a" * (target_bytes - 1)
    got, headers, _ = exchange(server, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % target)
    assert (got, headers["content-type"]) == (status, content_type)


@pytest.mark.parametrize("request_bytes", [
    b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX\x01A: b\r\n\r\n",
], ids=["content-length not a number", "content-length and chunked", "bad byte in a header name"])
def test_the_server_itself_answers_invalid_http_in_plain_text(server: ServerProcess, request_bytes: bytes) -> None:
    status, headers, body = exchange(server, request_bytes)
    assert (status, headers["content-type"], body) == ("HTTP/1.1 400 Bad Request", "text/plain; charset=utf-8",
                                                       b"Invalid HTTP request received.")


def test_a_body_cut_short_then_closed_gets_no_answer(server: ServerProcess) -> None:
    body = b"--abc\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=abc\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body) + 100, body))
        conn.shutdown(socket.SHUT_WR)
        assert conn.recv(65536) == b""
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "alive"}
