"""The load generator of bench/load.py, run as its own process: C keep-alive connections, each sending the
same multipart POST back to back for a bounded time, then one JSON line on stdout.

    python -m bench.load_client --url http://127.0.0.1:8000/v1/detect --file face.png --type image/png \
        --concurrency 32 --seconds 8 --warmup 1

A hand-written HTTP/1.1 client on asyncio streams rather than httpx: on a 2-core machine the load generator
shares the CPU with the server it measures, and httpx spends several times more CPU per request, which would
cap the floor's requests/s and flatter every ratio against it. The request bytes are built once; per request
the client only writes them and reads the status line, the headers and Content-Length bytes of body.
Latency and errors: every request started between the end of the warm-up and the deadline (those still in
flight at the deadline are waited for, so the tail is not cut off); requests/s: successful answers that
arrived inside that window, divided by its length. A 503 with Retry-After holds its connection back that long
before its next request, as a well-behaved client (and urllib3's Retry) does: a client that retried at once would
turn each refusal into a storm of them, on this machine's own cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

TIMEOUT_S = 10.0  # a request slower than this counts as an error (status 0)


def multipart_request(url: str, data: bytes, filename: str, content_type: str) -> bytes:
    parts = urlsplit(url)
    boundary = "benchloadboundary7f3a9c"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST {parts.path}{'?' + parts.query if parts.query else ''} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
              request: bytes) -> tuple[int, bytes, bool, float]:
    """-> (status, body, server wants the connection closed, its Retry-After in seconds or 0)."""
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    retry = headers.get("retry-after", "0")
    return status, body, headers.get("connection", "").lower() == "close", float(retry) if retry.isdigit() else 0.0


async def worker(host: str, port: int, request: bytes, start: float, deadline: float, out: list, sample: list):
    conn = None
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        try:
            if conn is None:
                conn = await asyncio.open_connection(host, port)
            status, body, close, retry_after = await asyncio.wait_for(one(*conn, request), TIMEOUT_S)
            if close:
                conn[1].close()
                conn = None
            if status == 200 and not sample:
                sample.append(body.decode("utf-8", "replace")[:400])
            if status == 503 and retry_after:  # as a well-behaved client does: this connection waits that long
                out.append((t0, time.perf_counter(), status))
                await asyncio.sleep(max(0.0, min(retry_after, deadline - time.perf_counter())))
                continue
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, IndexError):
            status = 0
            if conn is not None:
                conn[1].close()
            conn = None
        out.append((t0, time.perf_counter(), status))
    if conn is not None:
        conn[1].close()


async def drive(url: str, request: bytes, concurrency: int, seconds: float, warmup: float) -> dict:
    parts = urlsplit(url)
    now = time.perf_counter()
    start, deadline = now + warmup, now + warmup + seconds
    out: list[tuple[float, float, int]] = []
    sample: list[str] = []
    cpu0 = os.times()
    await asyncio.gather(*(worker(parts.hostname, parts.port, request, start, deadline, out, sample)
                           for _ in range(concurrency)))
    cpu1 = os.times()
    started = [(t1 - t0, s) for t0, t1, s in out if start <= t0 < deadline]
    lat = np.array([t for t, s in started if s == 200]) * 1e3
    refused = np.array([t for t, s in started if s == 503]) * 1e3  # overload answers: they must come fast
    statuses: dict[str, int] = {}
    for _, s in started:
        statuses[str(s)] = statuses.get(str(s), 0) + 1
    answered = sum(1 for _, t1, s in out if s == 200 and start <= t1 <= deadline)
    return {"requests": len(started), "ok": int(len(lat)), "errors": len(started) - int(len(lat)),
            "statuses": statuses, "rps": answered / seconds, "seconds": seconds,
            **{f"p{q}_ms": (float(np.percentile(lat, q)) if len(lat) else None) for q in (50, 95, 99)},
            "max_ms": float(lat.max()) if len(lat) else None,
            "p99_503_ms": float(np.percentile(refused, 99)) if len(refused) else None,
            "client_cpu_s": (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), "sample_body": sample[:1]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.load_client", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--file", required=True)
    ap.add_argument("--type", required=True, help="Content-Type of the file part")
    ap.add_argument("--concurrency", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    args = ap.parse_args(argv)
    path = Path(args.file)
    request = multipart_request(args.url, path.read_bytes(), path.name, args.type)
    print(json.dumps(asyncio.run(drive(args.url, request, args.concurrency, args.seconds, args.warmup))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
