"""Read the container files the way Docker and Compose would, enough to test them without a Docker engine."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """[(INSTRUCTION, arguments)], continuation lines joined, comments dropped."""
    instructions, pending = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def exec_form(args: str) -> list[str]:
    return json.loads(args)


def env_of(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for keyword, args in instructions:
        if keyword == "ENV":
            env.update(dict(pair.split("=", 1) for pair in args.split()))
    return env


def compose_default(value: object) -> str:
    """'${NAME:-default}' -> 'default', as Compose resolves it when NAME is unset."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))


def dockerignore_includes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern that matches the path (or one of its parent folders) decides."""
    included = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern[1:] if negate else pattern
        pat = pat.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pat.startswith("**/"):
            hit = any(fnmatch.fnmatch(p, pat[3:]) for p in parts)
        else:
            hit = any(fnmatch.fnmatch(p, pat) and p.count("/") == pat.count("/") for p in prefixes)
        if hit:
            included = negate
    return included
