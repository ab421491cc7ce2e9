"""Run `python -m service` as a real process on a free loopback port, the way a user starts it."""

from __future__ import annotations

from pathlib import Path

from service.process import ServerProcess as _Process


class ServerProcess(_Process):
    def __init__(self, python: str, cwd: Path, env: dict[str, str], log: Path, args: tuple[str, ...] = ()):
        super().__init__([python, "-m", "service", *args], cwd, env, log)
