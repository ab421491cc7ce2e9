"""Benchmark 2: the service under load on loopback, next to a framework floor and a naive PyTorch peer.

    python -m bench.load                                   # ~15 min: 7 servers, 2 load generators
    python -m bench.load --servers detect detect-workers floor --out load_workers   # the default worker count
    python -m bench.load --seconds 3 --concurrency 1 32 --no-wrk    # quicker look
    python -m bench.load --servers detect detect+batch --clients 4 --concurrency 256 --no-wrk   # 4 generators

Every server is its own process, started the way a user starts it (`python -m service --port P`, default
models/, one worker process, FACEDET_WORKERS=1, but for detect-workers; the references with
`python -m bench.load_peers floor|naive --port P`, see that file), and is driven by a separate load-generator
process at each concurrency for a bounded time. Servers:

* detect           — the service's /v1/detect (DB-VAE) as it starts by default: micro-batching off, requests of
                     at most 64x64 pixels (the PNG payloads) answered on the event loop (FACEDET_INLINE_MAX_PIXELS),
                     at most FACEDET_INLINE_TURN_BUDGET_MS of that work per turn of the loop
* detect-pool      — the same with FACEDET_INLINE_MAX_PIXELS=0: every request decoded and classified in the pool
* detect-unbounded — the same as detect with no bound per turn (the behaviour before that setting): an A/B
* detect-workers   — `detect` with the default worker count (FACEDET_WORKERS auto: one process per usable core,
                     see bench/scaling.py), the way the service starts by default; its CPU and memory are summed
                     over the supervisor and its workers
* detect+batch     — the same with micro-batching on (FACEDET_MICRO_BATCH_MAX and _WAIT_MS from --batch-max and
                     --batch-wait-ms; 16 images, no wait by default)
* floor            — bare FastAPI endpoint, same multipart upload, constant JSON
* naive            — Pillow decode + PyTorch eager DB-VAE encoder from checkpoints/dbvae.pt, one request at a time
                     (skipped, with a note, when the checkpoint is missing: a fresh clone has only models/)

Two load generators. The own client (bench/load_client.py: asyncio, keep-alive connections, latencies of the
requests started after a 1 s warm-up) sends --payloads at --concurrency; wrk (Debian's package, one C thread, the
Lua script bench/wrk_post.lua; every request of the run counted, a new connection's first ones included, p99.9,
the slowest and wrk's timeouts) sends --wrk-payloads at --wrk-concurrency. Payloads: a real face (scikit-image's
LFW subset, face #0, 25x25 grey upscaled to a 64x64 RGB PNG), a real colour photo crop (64x64 of scikit-learn's
china.jpg, PNG, 10.8 kB) and a real photo (china.jpg resized to a 640x480 JPEG, quality 90).

Cells run interleaved (each generator, payload and concurrency: every server in turn), so a burst of load from
another process on this shared machine hits all servers alike. Per cell: requests/s, p50/p95/p99 latency, errors
(any non-200 or transport failure), the p99 of the 503s, server CPU seconds per request, load generator CPU, and the
1-min load average. Per server: resident memory (VmRSS) after start-up, after an unmeasured warm-up burst of each
payload at the highest concurrency (the first large uploads fill allocator caches once), the peak while it was
driven, and 2.5 s after its last cell (idle: the service hands freed heap back to the OS after
FACEDET_MEMORY_TRIM_S, 1 s); growth is given from start-up (the goal's measure) and from after the warm-up (the
leak check). Goals: those of the first release at c=32 on the face PNG, and issue 18's tail goals (tail_goals).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import OUT_HELP, load_average, load_note, machine, table, write_result
from bench.load_client import multipart_request
from service.process import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")
WRK_SCRIPT = ROOT / "bench" / "wrk_post.lua"
SERVERS = ["detect", "detect-workers", "detect-pool", "detect-unbounded", "detect+batch", "floor", "naive"]
PAYLOADS = ["png64", "crop64", "jpeg640x480"]
# detect-unbounded: small requests answered on the event loop with no bound per loop turn, as before the bound
# (service/admission.py, INLINE_TURN_BUDGET_S): an A/B of that change in the same run.
UNBOUNDED_TURN_MS = 60_000
CROP_BOX = (200, 100, 264, 164)  # a 64x64 colour crop of china.jpg (roof and sky): a 10.8 kB PNG


def payloads(folder: Path) -> dict[str, tuple[Path, str]]:
    from skimage import data
    from sklearn.datasets import load_sample_image

    face = Image.fromarray((data.lfw_subset()[0] * 255).round().astype(np.uint8)).convert("RGB")
    face = face.resize((64, 64), Image.Resampling.BILINEAR)
    china = Image.fromarray(load_sample_image("china.jpg"))
    photo = china.resize((640, 480), Image.Resampling.BILINEAR)
    files = {"png64": (folder / "face64.png", "image/png"), "crop64": (folder / "crop64.png", "image/png"),
             "jpeg640x480": (folder / "photo640x480.jpg", "image/jpeg")}
    face.save(files["png64"][0], format="PNG")
    china.crop(CROP_BOX).save(files["crop64"][0], format="PNG")
    buf = io.BytesIO()
    photo.save(buf, format="JPEG", quality=90)
    files["jpeg640x480"][0].write_bytes(buf.getvalue())
    return files


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    """A process's resident memory (or another /proc/PID/status figure in kB, such as its peak VmHWM), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def tree(pid: int) -> list[int]:
    """pid and its descendants now (a supervisor, its workers and multiprocessing's resource tracker)."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [pid, *(p for kid in kids for p in tree(int(kid)))]


class Server(ServerProcess):
    """One server of the run, with its resident memory at the moments the summary reports; CPU and memory are
    its processes' together (one, or a supervisor and its workers)."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path):
        super().__init__([sys.executable, *args], ROOT, env, log)
        self.name = name
        self.rss = {"start_mb": None, "after_warmup_mb": None, "peak_mb": 0.0, "end_mb": None}

    def wait_ready(self, timeout: float = 180.0) -> None:
        super().wait_ready(timeout)
        self.rss["start_mb"] = self.resident_mb()

    def resident_mb(self) -> float:
        return sum(_alive(rss_mb, p) for p in tree(self.proc.pid))

    def cpu_s(self) -> float:
        return sum(_alive(cpu_s, p) for p in tree(self.proc.pid))


def _alive(figure, pid: int) -> float:
    """A process's figure, 0 once it has gone (between listing the tree and reading it)."""
    try:
        return figure(pid)
    except OSError:
        return 0.0


def merged(cells: list[dict]) -> dict:
    """Several load generators' cells of one run -> one: counts and requests/s summed, each latency figure the
    slowest generator's (percentiles of separate processes do not combine exactly), the first sample body."""
    out = {k: sum(c[k] for c in cells) for k in ("requests", "ok", "errors", "rps", "client_cpu_s")}
    statuses: dict[str, int] = {}
    for c in cells:
        for k, v in c["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    worst = {k: max((c[k] for c in cells if c[k] is not None), default=None)
             for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "p99_503_ms")}
    return {**out, "statuses": statuses, "seconds": cells[0]["seconds"], **worst, "clients": len(cells),
            "sample_body": next((c["sample_body"] for c in cells if c["sample_body"]), [])}


def drive(server: Server, path: Path, ctype: str, concurrency: int, seconds: float, warmup: float,
          clients: int = 1) -> dict:
    """One cell: the load generator in its own process (or `clients` of them sharing the concurrency), the
    server's RSS sampled every 0.1 s meanwhile."""
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            server.rss["peak_mb"] = max(server.rss["peak_mb"], server.resident_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu0 = server.cpu_s()
    procs = [subprocess.Popen([sys.executable, "-m", "bench.load_client", "--url", f"{server.url}/v1/detect",
                               "--file", str(path), "--type", ctype,
                               "--concurrency", str(max(1, concurrency // clients)),
                               "--seconds", str(seconds), "--warmup", str(warmup)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(clients)]
    outs = [p.communicate(timeout=warmup + seconds + 120) for p in procs]
    server_cpu = server.cpu_s() - cpu0
    done.set()
    sampler.join()
    for p, (_, err) in zip(procs, outs):
        if p.returncode:
            raise subprocess.CalledProcessError(p.returncode, p.args, stderr=err)
    cells = [json.loads(o) for o, _ in outs]
    cell = cells[0] if clients == 1 else merged(cells)
    # Server CPU over the whole cell (warm-up and tail included) per request answered in it: an estimate.
    cell["server_cpu_ms_per_req"] = 1e3 * server_cpu / max(1, cell["requests"]) if cell["requests"] else None
    cell["load_1min"] = load_average()
    return cell


def drive_wrk(server: Server, path: Path, ctype: str, concurrency: int, seconds: float, timeout_s: float,
              folder: Path) -> dict:
    """One cell with wrk (one thread; C, so it needs far less CPU than the server it drives): every request of the
    run is in its latencies, the first ones on each new connection included; no warm-up."""
    head, _, body = multipart_request(f"{server.url}/v1/detect", path.read_bytes(), path.name, ctype).partition(
        b"\r\n\r\n")
    body_file = folder / f"wrk-{path.stem}.bin"
    body_file.write_bytes(body)
    content_type = next(line.split(":", 1)[1].strip() for line in head.decode().split("\r\n")
                        if line.lower().startswith("content-type:"))
    cpu0 = server.cpu_s()
    out = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", f"{timeout_s:g}s",
                          "-s", str(WRK_SCRIPT), f"{server.url}/v1/detect"],
                         env={**os.environ, "WRK_BODY": str(body_file), "WRK_TYPE": content_type},
                         capture_output=True, text=True, timeout=seconds + 60, check=True)
    server_cpu = server.cpu_s() - cpu0
    w = json.loads(out.stdout.strip().splitlines()[-1])
    errors = w["timeouts"] + w["connect_errors"] + w["read_errors"] + w["write_errors"] + w["status_errors"]
    return {"requests": w["requests"], "errors": errors, "timeouts": w["timeouts"],
            "rps": (w["requests"] - errors) / (w["duration_us"] / 1e6),  # answered, as the own client counts them
            **{k: w[f"{k[:-3]}_us"] / 1e3 for k in ("p50_ms", "p99_ms", "p999_ms", "max_ms")},
            "server_cpu_ms_per_req": 1e3 * server_cpu / max(1, w["requests"]), "load_1min": load_average()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--seconds", type=float, default=8.0, help="measured seconds per cell")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds at the start of each cell")
    ap.add_argument("--warmup-burst", type=float, default=5.0,
                    help="seconds of unmeasured traffic per payload before the first cell (0: none)")
    ap.add_argument("--servers", nargs="+", default=SERVERS, choices=SERVERS)
    ap.add_argument("--payloads", nargs="+", default=["png64", "jpeg640x480"], choices=PAYLOADS,
                    help="payloads the own client sends")
    ap.add_argument("--wrk-payloads", nargs="+", default=["crop64"], choices=PAYLOADS,
                    help="payloads wrk sends (--no-wrk: none)")
    ap.add_argument("--wrk-concurrency", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--wrk-seconds", type=float, default=8.0)
    ap.add_argument("--wrk-timeout", type=float, default=2.0, help="wrk's --timeout, s: slower requests count as errors")
    ap.add_argument("--no-wrk", action="store_true", help="only the own client")
    ap.add_argument("--clients", type=int, default=1, help="own load-generator processes per cell, sharing its "
                                                           "concurrency (their figures merged: bench.load.merged)")
    ap.add_argument("--batch-max", type=int, default=16, help="FACEDET_MICRO_BATCH_MAX for detect+batch")
    ap.add_argument("--batch-wait-ms", type=float, default=0.0, help="FACEDET_MICRO_BATCH_WAIT_MS for detect+batch")
    ap.add_argument("--checkpoint", default="checkpoints/dbvae.pt", help="the naive peer's PyTorch model")
    ap.add_argument("--out", default="load", help=OUT_HELP)
    args = ap.parse_args(argv)

    info = machine()
    notes = []
    # One worker process each (FACEDET_WORKERS=1), to compare servers on the same cores, but detect-workers: the
    # default worker count, as a user's `python -m service` runs; bench/scaling.py measures each count.
    one = {"FACEDET_WORKERS": "1", "FACEDET_MICRO_BATCH_MAX": "0"}
    specs = {"detect": (["-m", "service"], one),
             "detect-pool": (["-m", "service"], {**one, "FACEDET_INLINE_MAX_PIXELS": "0"}),
             "detect-unbounded": (["-m", "service"], {**one, "FACEDET_INLINE_TURN_BUDGET_MS": str(UNBOUNDED_TURN_MS)}),
             "detect-workers": (["-m", "service"], {"FACEDET_MICRO_BATCH_MAX": "0"}),
             "detect+batch": (["-m", "service"], {**one, "FACEDET_MICRO_BATCH_MAX": str(args.batch_max),
                                                  "FACEDET_MICRO_BATCH_WAIT_MS": str(args.batch_wait_ms)}),
             "floor": (["-m", "bench.load_peers", "floor"], {}),
             "naive": (["-m", "bench.load_peers", "naive", "--checkpoint", args.checkpoint], {})}
    names = list(args.servers)
    if "naive" in names and not (ROOT / args.checkpoint).is_file():
        names.remove("naive")
        notes.append(f"naive peer skipped: {args.checkpoint} is missing (run `python -m training` to make it)")
    wrk = not args.no_wrk and shutil.which("wrk") is not None
    if not args.no_wrk and not wrk:
        notes.append("wrk cells skipped: no `wrk` on PATH (Debian package wrk; `make install-bench` installs it)")
    rows, servers = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        files = payloads(Path(tmp))
        sizes = {k: {"file": p.name, "bytes": p.stat().st_size} for k, (p, _) in files.items()}
        try:
            for name in names:
                servers[name] = Server(name, specs[name][0], specs[name][1], Path(tmp) / f"{name}.log")
            for server in servers.values():
                server.wait_ready()
            # One unmeasured burst per payload at the highest concurrency: the first large uploads fill the
            # allocator's caches once (see the memory columns); what the run adds after that is the leak check.
            for server in servers.values():
                for path, ctype in files.values() if args.warmup_burst > 0 else ():
                    drive(server, path, ctype, max(args.concurrency), args.warmup_burst, 0.0)
                server.rss["after_warmup_mb"] = server.resident_mb()
            cells = [("own", p, c) for p in args.payloads for c in args.concurrency]
            cells += [("wrk", p, c) for p in args.wrk_payloads for c in args.wrk_concurrency] if wrk else []
            for generator, payload, c in cells:
                path, ctype = files[payload]
                for name, server in servers.items():
                    if generator == "own":
                        cell = drive(server, path, ctype, c, args.seconds, args.warmup, args.clients)
                    else:
                        cell = drive_wrk(server, path, ctype, c, args.wrk_seconds, args.wrk_timeout, Path(tmp))
                    rows.append({"generator": generator, "payload": payload, "concurrency": c, "target": name, **cell})
                    print(f"  {generator} {payload:<11} c={c:<3} {name:<16} {cell['rps']:7.1f} req/s  "
                          f"p99 {cell['p99_ms'] or float('nan'):7.1f} ms  errors {cell['errors']}", flush=True)
            time.sleep(2.5)  # idle for more than two of the service's memory-trim intervals
            for server in servers.values():
                server.rss["end_mb"] = server.resident_mb()
        finally:
            for server in servers.values():
                server.stop()

    by = {(r["generator"], r["payload"], r["concurrency"], r["target"]): r for r in rows}
    for r in rows:
        for ref in ("floor", "naive"):
            base = by.get((r["generator"], r["payload"], r["concurrency"], ref))
            if r["target"].startswith("detect") and base and base["rps"]:
                r[f"vs_{ref}"] = r["rps"] / base["rps"]
    # growth: from just after start-up to after the run; steady: from after the warm-up bursts, i.e. without
    # the one-time allocations the first requests of each kind make (allocator caches, decoder buffers).
    memory = {name: {**s.rss, "growth": s.rss["end_mb"] / s.rss["start_mb"] - 1.0,
                     "growth_steady": s.rss["end_mb"] / s.rss["after_warmup_mb"] - 1.0}
              for name, s in servers.items()}
    goals = {}
    for name in (n for n in servers if n.startswith("detect")):
        r, mem = by.get(("own", "png64", 32, name)), memory[name]
        if r is None:
            continue
        goals[name] = {"vs_floor>=0.70": r.get("vs_floor", 0) >= 0.70,
                       "vs_naive>=2": (r["vs_naive"] >= 2.0) if "vs_naive" in r else None,
                       "p99<100ms": r["p99_ms"] is not None and r["p99_ms"] < 100.0, "zero_errors": r["errors"] == 0,
                       "memory_growth<5%": mem["growth"] < 0.05,
                       "memory_growth<5% after warm-up": mem["growth_steady"] < 0.05}
    tail = tail_goals(by, [n for n in servers if n.startswith("detect")], args)
    info["load_average_1min_at_end"] = load_average()
    info["load_average_1min_max_during"] = max((r["load_1min"] for r in rows if r["load_1min"] is not None),
                                               default=None)
    summary = {f"goals at c=32, png64, {name}": ", ".join(f"{k} {'n/a' if v is None else ('met' if v else 'MISSED')}"
                                                          for k, v in g.items()) for name, g in goals.items()}
    summary.update({f"tail goals, {name}": ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in g.items())
                    for name, g in tail.items()})
    summary.update({f"memory {k}": f"{v['start_mb']:.0f} MB after start, peak {v['peak_mb']:.0f} MB, "
                                   f"{v['end_mb']:.0f} MB after the run ({v['growth']:+.1%}; "
                                   f"{v['growth_steady']:+.1%} from after the warm-up bursts)"
                    for k, v in memory.items()})
    result = {"benchmark": "load", "machine": info, "note": load_note(info), "notes": notes, "summary": summary,
              "settings": {"clients": args.clients, "concurrency": args.concurrency, "seconds_per_cell": args.seconds,
                           "warmup_s": args.warmup,
                           "warmup_burst_s": args.warmup_burst,
                           "micro_batch": {"max": args.batch_max, "wait_ms": args.batch_wait_ms},
                           "payloads": sizes,
                           "client": "bench/load_client.py: asyncio HTTP/1.1, one keep-alive connection per "
                                     "concurrent request, separate process"},
              "wrk": {"payloads": args.wrk_payloads, "concurrency": args.wrk_concurrency, "seconds": args.wrk_seconds,
                      "timeout_s": args.wrk_timeout, "threads": 1} if wrk else None,
              "rows": rows, "memory": memory, "goals_png64_c32": goals, "tail_goals": tail}
    print_result(result)
    print(f"wrote {write_result(args.out, result)}")
    return 0


def tail_goals(by: dict, detects: list[str], args: argparse.Namespace) -> dict[str, dict[str, bool]]:
    """Issue 18's tail goals, from this run's cells: with wrk, p99 within 3x the floor's at every wrk concurrency and
    nothing slower than 1 s (no wrk timeout either) at the highest; requests/s not below the unbounded inline path's
    (the behaviour before the per-turn bound); with the own client, photos at the highest concurrency: any 503 fast
    (p99 under 100 ms) and no answered request over 2 s (overload refused, not queued)."""
    goals: dict[str, dict[str, bool]] = {}
    top = max(args.wrk_concurrency)
    for name in detects:
        g = {}
        for payload in args.wrk_payloads:
            for c in args.wrk_concurrency:
                r, floor = by.get(("wrk", payload, c, name)), by.get(("wrk", payload, c, "floor"))
                if r is None:
                    continue
                if floor is not None:
                    g[f"wrk {payload} c={c} p99<=3x floor"] = r["p99_ms"] <= 3 * floor["p99_ms"]
                if c == top:
                    g[f"wrk {payload} c={c} max<1s"] = r["max_ms"] < 1000.0 and r["timeouts"] == 0
                old = by.get(("wrk", payload, c, "detect-unbounded"))
                if old is not None and name != "detect-unbounded":
                    g[f"wrk {payload} c={c} req/s>=unbounded"] = r["rps"] >= old["rps"]
        photo = by.get(("own", "jpeg640x480", max(args.concurrency), name))
        if photo is not None:
            g[f"jpeg640x480 c={photo['concurrency']} 503 p99<100ms"] = (photo["p99_503_ms"] is None
                                                                       or photo["p99_503_ms"] < 100.0)
            g[f"jpeg640x480 c={photo['concurrency']} max<2s"] = (photo["max_ms"] or 0.0) < 2000.0
        goals[name] = g
    return goals


COLUMNS = [("generator", "client", ""), ("payload", "payload", ""), ("concurrency", "conc", "d"), ("target", "server", ""),
           ("rps", "req/s", ",.1f"), ("p50_ms", "p50 ms", ".1f"), ("p95_ms", "p95 ms", ".1f"),
           ("p99_ms", "p99 ms", ".1f"), ("p999_ms", "p99.9 ms", ".1f"), ("max_ms", "max ms", ".1f"),
           ("errors", "errors", "d"), ("timeouts", "timeouts", "d"), ("p99_503_ms", "503 p99 ms", ".1f"),
           ("vs_floor", "/floor", ".2f"),
           ("vs_naive", "/naive", ".2f"), ("server_cpu_ms_per_req", "srv cpu ms/req", ".2f"),
           ("load_1min", "load", ".2f")]


def print_result(result: dict) -> None:
    m = result["machine"]
    print(f"\nService under load (loopback) — {m['cpu']}, {m['logical_cores']} cores, "
          f"onnxruntime {m['onnxruntime']}, "
          f"{result['settings']['seconds_per_cell']:g} s per cell, {m['date']}")
    print(table(result["rows"], COLUMNS))
    print("\nServer resident memory (VmRSS, MB):")
    print(table([{"server": k, **v} for k, v in result["memory"].items()],
                [("server", "server", ""), ("start_mb", "after start", ".1f"),
                 ("after_warmup_mb", "after warm-up", ".1f"), ("peak_mb", "peak under load", ".1f"),
                 ("end_mb", "after run", ".1f"), ("growth", "growth", "+.1%"),
                 ("growth_steady", "growth after warm-up", "+.1%")]))
    for k, v in result["summary"].items():
        if k.startswith(("goals", "tail goals")):
            print(f"{k}: {v}")
    print(f"1-min load average: {m['load_average_1min_at_start']:.2f} at start, "
          f"{m['load_average_1min_max_during']:.2f} at most during, {m['load_average_1min_at_end']:.2f} at end")
    for line in [*result["notes"], result["note"]]:
        if line:
            print(line)


if __name__ == "__main__":
    raise SystemExit(main())
