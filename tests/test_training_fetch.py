"""The fetch command against a local HTTP server on loopback: full download, resume after a cut,
checksum, and the offline message."""

import hashlib
import http.server
import threading

import numpy as np
import pytest

from training.fetch import main as fetch_main
from tests.utils.training_data import lfw_faces, photo_patches, write_lab_h5


class RangeHandler(http.server.BaseHTTPRequestHandler):
    payload = b""
    cut_after: int | None = None  # first answer stops early, as a dropped connection would
    requests: list = []

    def do_GET(self):
        data, start = self.payload, 0
        header = self.headers.get("Range")
        type(self).requests.append(header)
        if header:
            start = int(header.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).cut_after is not None:
            body, type(self).cut_after = body[:type(self).cut_after], None
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    rgb = np.concatenate([lfw_faces(4), photo_patches(4)])
    payload = write_lab_h5(tmp_path / "src.h5", rgb, np.r_[np.ones(4), np.zeros(4)]).read_bytes()
    handler = type("Handler", (RangeHandler,), {"payload": payload, "cut_after": None, "requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/train_face.h5", handler
    httpd.shutdown()


def test_download_checks_size_and_checksum(server, tmp_path):
    url, handler = server
    out = tmp_path / "data" / "train_face.h5"
    digest = hashlib.sha256(handler.payload).hexdigest()
    assert fetch_main(["--url", url, "--out", str(out), "--sha256", digest, "--no-progress"]) == 0
    assert out.read_bytes() == handler.payload


def test_interrupted_download_resumes(server, tmp_path, capsys):
    url, handler = server
    out = tmp_path / "train_face.h5"
    handler.cut_after = 1000
    assert fetch_main(["--url", url, "--out", str(out), "--no-progress"]) == 2
    assert "incomplete: 1000 of" in capsys.readouterr().err
    assert (tmp_path / "train_face.h5.part").stat().st_size == 1000 and not out.exists()
    assert fetch_main(["--url", url, "--out", str(out), "--no-progress"]) == 0
    assert handler.requests[-1] == "bytes=1000-"  # only the rest was asked for
    assert out.read_bytes() == handler.payload


def test_checksum_mismatch_is_refused(server, tmp_path, capsys):
    url, _ = server
    out = tmp_path / "train_face.h5"
    assert fetch_main(["--url", url, "--out", str(out), "--sha256", "0" * 64, "--no-progress"]) == 2
    assert "checksum mismatch" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "train_face.h5.part").exists()


def test_offline_gives_a_clear_error(tmp_path, capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = fetch_main(["--url", f"http://127.0.0.1:{port}/train_face.h5", "--out", str(tmp_path / "x.h5"),
                       "--timeout", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "are you offline?" in err and err.count("\n") == 1
