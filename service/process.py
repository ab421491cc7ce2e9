"""A server run as its own process on a free loopback port, the way a user starts it: `python -m service`, or
any command that takes `--port P` and answers GET /readyz. Used by the load benchmark (bench/load.py) and the
tests that call the real process (tests/utils/server.py); standard library only."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


LISTEN, ESTABLISHED = "0A", "01"  # TCP states as /proc/net/tcp writes them


def tcp_sockets(pid: int, port: int, state: str) -> set[int]:
    """The TCP sockets (inodes) on local `port`, in `state`, that process `pid` holds (Linux /proc; empty elsewhere
    or once the process is gone)."""
    held = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:  # closed meanwhile
                continue
            if target.startswith("socket:["):
                held.add(int(target[8:-1]))
    except OSError:
        return set()
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()  # sl, local address:port (hex), remote, state, ..., inode (the 10th)
            if fields[3] == state and int(fields[1].rsplit(":", 1)[1], 16) == port and int(fields[9]) in held:
                found.add(int(fields[9]))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`command --port P` in `cwd`, output to `log`; FACEDET_* variables come only from `env`, never from the
    caller's shell."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str], log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACEDET_")} | env
        with log.open("wb") as out:
            self.proc = subprocess.Popen([*command, "--port", str(self.port)], cwd=cwd, env=env,
                                         stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until GET /readyz answers 200; RuntimeError with the log if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):  # not listening yet, or 503 while warming up
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
