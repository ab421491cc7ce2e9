"""Run `python -m service` as a real process on a free loopback port, the way a user starts it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.process import ServerProcess as _Process


class ServerProcess(_Process):
    """One process unless `env` asks for more (FACEDET_WORKERS): the tests that read the server's pid (its memory,
    its signals) mean the process that serves; tests/test_service_workers.py starts several."""

    def __init__(self, python: str, cwd: Path, env: dict[str, str], log: Path, args: tuple[str, ...] = ()):
        super().__init__([python, "-m", "service", *args], cwd, {"FACEDET_WORKERS": "1", **env}, log)


REPO = Path(__file__).resolve().parents[2]


@contextmanager
def serving(env: dict[str, str], log: Path) -> Iterator[ServerProcess]:
    """`python -m service` from the checkout, ready, for the duration of the block (a module fixture's body)."""
    proc = ServerProcess(sys.executable, REPO, {"FACEDET_PROVIDERS": "CPUExecutionProvider", **env}, log)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()
