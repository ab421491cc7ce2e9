"""The real server process: uvicorn on a free port, called over HTTP, stopped with SIGTERM."""

from __future__ import annotations

import select
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.utils.images import encode, picture
from tests.utils.models import Reference
from tests.utils.server import ServerProcess, serving
from training.data.image import load_image, to_model_input

REPO = Path(__file__).resolve().parent.parent
CAP = 300_000


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # FACEDET_PORT says 1; the --port flag must win.
    env = {"FACEDET_MODELS_DIR": str(models_dir), "FACEDET_PORT": "1", "FACEDET_MAX_UPLOAD_BYTES": str(CAP)}
    with serving(env, tmp_path_factory.mktemp("server") / "server.log") as proc:
        yield proc


def test_detect_over_http(server: ServerProcess, reference: Reference) -> None:
    photo = encode(picture(640, 480, seed=11), "JPEG", quality=90)
    other = encode(picture(300, 500, seed=12), "PNG")
    response = httpx.post(f"{server.url}/v1/detect", params={"boxes": "false"},  # the centre-crop answer
                          files=[("image", ("photo.jpg", photo, "image/jpeg")),
                                 ("image", ("other.png", other, "image/png"))], timeout=10)
    assert response.status_code == 200, response.text
    expected = reference.probability("dbvae", to_model_input(np.stack([load_image(photo), load_image(other)])))
    got = [r["face_probability"] for r in response.json()["results"]]
    assert got == pytest.approx(list(expected), abs=1e-6)
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "alive"}
    assert httpx.get(f"{server.url}/metrics").text.count("facedet_requests_total{") >= 1
    # No access log by default (FACEDET_ACCESS_LOG): the request is counted in /metrics, not logged.
    assert "POST /v1/detect" not in server.log.read_text()


def _read_response(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data and data.rstrip().endswith(b"}"):
            break
    return data


MULTIPART_HEAD = (b'--b\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
                  b"Content-Type: image/png\r\n\r\n")


def test_declared_oversize_body_is_refused_without_reading_it(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Content-Length: 1000000000\r\n\r\n" + MULTIPART_HEAD)
        response = _read_response(sock)
    assert response.startswith(b"HTTP/1.1 413 "), response[:200]
    assert b"application/problem+json" in response and b"300000-byte limit" in response


def test_streamed_oversize_body_is_cut_off_while_streaming(server: ServerProcess) -> None:
    """Chunked upload, no Content-Length: the 413 arrives long before the 64 MiB body is sent."""
    total, block = 64 * 2**20, b"\0" * 2**16
    sent = 0
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(10)
        sock.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n"
                     + f"{len(MULTIPART_HEAD):x}\r\n".encode() + MULTIPART_HEAD + b"\r\n")
        while sent < total:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered
            try:
                sock.sendall(f"{len(block):x}\r\n".encode() + block + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(block)
        response = _read_response(sock)
    assert response.startswith(b"HTTP/1.1 413 "), response[:200]
    assert b"300000-byte limit" in response
    assert sent < total // 4, f"{sent} bytes went out before the refusal"
    print(f"refused after {sent} of {total} bytes sent (cap {CAP})")
    # ... and the server is still fine.
    assert httpx.get(f"{server.url}/readyz").status_code == 200


def test_sigterm_turns_readiness_503_then_exits(models_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    env = {"FACEDET_MODELS_DIR": str(models_dir), "FACEDET_SHUTDOWN_DELAY_S": "3",
           "FACEDET_PROVIDERS": "CPUExecutionProvider", "FACEDET_ACCESS_LOG": "true"}
    proc = ServerProcess(sys.executable, REPO, env, log)
    try:
        proc.wait_ready()
        proc.proc.send_signal(signal.SIGTERM)
        sent_at = time.monotonic()
        ready = httpx.get(f"{proc.url}/readyz", timeout=5)
        assert ready.status_code == 503 and "shutting down" in ready.json()["detail"]
        # Work still accepted during the drain window (a load balancer has not noticed yet).
        photo = encode(picture(seed=3), "PNG")
        assert httpx.post(f"{proc.url}/v1/detect", files={"image": ("p.png", photo)}, timeout=10).status_code == 200
        assert time.monotonic() - sent_at < 3
        code = proc.proc.wait(timeout=30)
        print(f"exited {code} {time.monotonic() - sent_at:.1f}s after SIGTERM")
    finally:
        proc.stop()
    # uvicorn re-raises the signal once it has shut down cleanly, so "killed by SIGTERM" is a clean exit here.
    assert code in (0, -signal.SIGTERM)
    text = log.read_text()
    assert "SIGTERM: readiness is now 503" in text and "Finished server process" in text
    assert '"POST /v1/detect HTTP/1.1" 200' in text  # FACEDET_ACCESS_LOG=true: one line per request
    assert "Traceback" not in text


def test_the_server_freezes_what_start_up_made(make_settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once up, the server moves every object start-up made (modules, sessions, the app) out of the collector's
    sight (gc.freeze), so a full collection under load scans only what requests left behind."""
    import asyncio
    import gc

    import uvicorn

    from service.admission import Admission
    from service.server import DrainingServer, server_config

    async def started(self, sockets=None) -> None:  # uvicorn's own start-up (lifespan, sockets) is not under test
        self.started = True

    monkeypatch.setattr(uvicorn.Server, "startup", started)
    settings = make_settings()
    admission = Admission(settings)
    server = DrainingServer(server_config(settings, "service.main:app"), admission, 0.0)
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        asyncio.run(server.startup())
        assert server.started and gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
        admission.close()
