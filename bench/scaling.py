"""Benchmark: the service's throughput with 1, 2, … worker processes on one port (FACEDET_WORKERS).

    python -m bench.scaling                           # 1 and 2 workers, the 64 px PNG, 8 s each
    python -m bench.scaling --workers 1 2 4 8 16 --clients 4    # a bigger host
    python -m bench.scaling --payload jpeg640x480 --seconds 3
    python -m bench.scaling --sockets own                 # without the shared-socket rows

Each worker count is its own `python -m service` (FACEDET_WORKERS=N, micro-batching off, as bench/load.py's
`detect`), driven on /v1/detect by the load generator of bench/load.py (bench/load_client.py: keep-alive
connections each sending the same multipart POST back to back, in its own process), or by wrk where it is installed
(bench/wrk_post.lua; one C thread, so the server keeps more of the shared CPU), at a concurrency that keeps every
worker busy: 32 connections per worker unless --concurrency says otherwise. Payloads are bench/load.py's.
Per count: requests/s, p50/p99 latency, errors, the scaling efficiency rps(N) / (N * rps(1)) (against the
smallest count run, scaled, when 1 is not among them), the server's CPU per request (supervisor and workers
together) and the load generator's CPU, and the server's memory (proportional set size, summed over its
processes: pages the workers share are counted once). Goal (issue 18): efficiency >= 0.8 for every count up to
the usable cores. The load generator runs on the same machine and takes CPU the server then lacks, so at N = all
cores the efficiency is lower than on a machine where the client runs elsewhere: its CPU is shown beside it.

Sockets (FACEDET_REUSE_PORT): each count above 1 runs with every worker on its own socket of the port (`own`, the
default) and, as an A/B, with one socket shared by all (`shared`, FACEDET_REUSE_PORT=false). `conns` is how many
of the kept-alive connections each worker held halfway through the cell: how evenly they were spread. With wrk
they open together after IDLE_S of quiet, as a client pool that opens at once does.

With --clients K the load is split over K generator processes (one process tops out around a thousand
requests/s): requests/s and errors are summed; p50 is their mean weighted by answers, p99 the worst of theirs, an
upper bound, as the generators keep only their own percentiles.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import OUT_HELP, finish, load_average, load_note, machine, table
from bench.load import PAYLOADS, Server, drive_wrk, payloads, tree
from service.cores import usable_cores
from service.process import ESTABLISHED, tcp_sockets

ROOT = Path(__file__).resolve().parent.parent
GOAL = 0.8
# Between the warm-up and the measured cell: the measured connections open together on an idle service, as a client
# pool that opens at once does (a proxy's, a batch job's). Back to back, a shared socket's skew shows less.
IDLE_S = 1.0
WRK_TIMEOUT_S = 10.0  # photos at 32 connections a worker queue for seconds: only a hang should count as an error


def pss_mb(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1]) / 1024
    return total


def drive(url: str, path: Path, ctype: str, concurrency: int, clients: int, seconds: float, warmup: float) -> dict:
    """The load generators in parallel, `concurrency` connections split between them; their results combined."""
    shares = [concurrency // clients + (i < concurrency % clients) for i in range(clients)]

    def one(share: int) -> dict:
        out = subprocess.run([sys.executable, "-m", "bench.load_client", "--url", url, "--file", str(path),
                              "--type", ctype, "--concurrency", str(share), "--seconds", str(seconds),
                              "--warmup", str(warmup)],
                             cwd=ROOT, capture_output=True, text=True, timeout=warmup + seconds + 120, check=True)
        return json.loads(out.stdout)

    with ThreadPoolExecutor(clients) as pool:
        cells = list(pool.map(one, shares))
    ok = sum(c["ok"] for c in cells)
    return {"requests": sum(c["requests"] for c in cells), "ok": ok, "errors": sum(c["errors"] for c in cells),
            "rps": sum(c["rps"] for c in cells),
            "p50_ms": sum(c["p50_ms"] * c["ok"] for c in cells if c["ok"]) / ok if ok else None,
            "p99_ms": max((c["p99_ms"] for c in cells if c["ok"]), default=None),
            "client_cpu_s": sum(c["client_cpu_s"] for c in cells)}


def worker_pids(supervisor: int) -> list[int]:
    """The supervisor's worker processes (its children but multiprocessing's resource tracker); itself alone for
    one worker."""
    kids = tree(supervisor)[1:]
    workers = [p for p in kids if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()]
    return workers or [supervisor]


def run_count(workers: int, sockets: str, files: dict, args: argparse.Namespace, log: Path) -> dict:
    env = {"FACEDET_WORKERS": str(workers), "FACEDET_MICRO_BATCH_MAX": "0",
           "FACEDET_REUSE_PORT": "true" if sockets == "own" else "false"}
    if args.worker_threads:
        env["FACEDET_WORKER_THREADS"] = str(args.worker_threads)
    server = Server(f"workers={workers}", ["-m", "service"], env, log)
    held: list[int] = []  # each worker's connections, halfway through the measured part
    sample = threading.Timer(args.warmup + args.seconds / 2 if args.generator == "own" else args.seconds / 2,
                             lambda: held.extend(sorted(len(tcp_sockets(p, server.port, ESTABLISHED))
                                                        for p in worker_pids(server.proc.pid))))
    try:
        server.wait_ready(timeout=60 + 10 * workers)
        path, ctype = files[args.payload]
        concurrency = args.concurrency or 32 * workers
        cpu0 = server.cpu_s()
        if args.generator == "wrk":  # C, one thread: far less of the shared CPU than the own client takes
            drive_wrk(server, path, ctype, concurrency, args.warmup, WRK_TIMEOUT_S, log.parent)  # unmeasured
            time.sleep(IDLE_S)
            cpu0 = server.cpu_s()
            sample.start()
            cell = drive_wrk(server, path, ctype, concurrency, args.seconds, WRK_TIMEOUT_S, log.parent)
            cell.update(ok=cell["requests"] - cell["errors"], client_cpu_s=None)
        else:
            sample.start()
            cell = drive(f"{server.url}/v1/detect", path, ctype, concurrency, args.clients, args.seconds,
                         args.warmup)
        server_cpu = server.cpu_s() - cpu0
        memory = pss_mb(tree(server.proc.pid))
        sample.join()
    finally:
        sample.cancel()
        server.stop()
    return {"workers": workers, "sockets": sockets if workers > 1 else "-", "concurrency": concurrency, **cell,
            "conns": "/".join(map(str, held)), "server_pss_mb": memory,
            # over the whole cell, warm-up included, per request answered in its measured part: an estimate
            "server_cpu_ms_per_req": 1e3 * server_cpu / cell["requests"] if cell["requests"] else None,
            "load_1min": load_average()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts, each its own server")
    ap.add_argument("--sockets", nargs="+", choices=["own", "shared"], default=["own", "shared"],
                    help="for counts above 1: a socket per worker (FACEDET_REUSE_PORT=true, the default) and/or one "
                         "shared socket; 1 worker runs once")
    ap.add_argument("--payload", choices=PAYLOADS, default="png64")
    ap.add_argument("--concurrency", type=int, help="connections (default: 32 per worker)")
    ap.add_argument("--generator", choices=["wrk", "own"], default="wrk" if shutil.which("wrk") else "own",
                    help="wrk (default where installed) or the own client, bench/load_client.py")
    ap.add_argument("--worker-threads", type=int, help="FACEDET_WORKER_THREADS in every worker (default: the "
                    "service's, 2): photos keep that many cores busy per worker, so 1 isolates the processes' scaling")
    ap.add_argument("--clients", type=int, default=1, help="own-client processes sharing the connections")
    ap.add_argument("--seconds", type=float, default=8.0, help="measured seconds per worker count")
    ap.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before them")
    ap.add_argument("--out", default="scaling", help=OUT_HELP)
    args = ap.parse_args(argv)
    counts = sorted(set(args.workers))

    info = machine()
    info["usable_cores"] = usable_cores()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        files = payloads(Path(tmp))
        for n in counts:
            for sockets in (args.sockets if n > 1 else ["own"]):
                rows.append(run_count(n, sockets, files, args, Path(tmp) / f"workers{n}-{sockets}.log"))
                print(f"  workers={n:<3} {rows[-1]['sockets']:6} {rows[-1]['rps']:8.1f} req/s  "
                      f"p99 {rows[-1]['p99_ms'] or float('nan'):7.1f} ms  errors {rows[-1]['errors']}  "
                      f"conns {rows[-1]['conns']}", flush=True)
    base = rows[0]
    for r in rows:
        r["efficiency"] = r["rps"] / (r["workers"] / base["workers"] * base["rps"]) if base["rps"] else None
    judged = [r for r in rows[1:] if r["workers"] <= info["usable_cores"] and r["efficiency"] is not None
              and r["sockets"] == "own"]  # the default
    goal = {f"workers={r['workers']}": "met" if r["efficiency"] >= GOAL else "MISSED" for r in judged}
    info["load_average_1min_at_end"] = load_average()
    result = {"benchmark": "scaling", "machine": info, "note": load_note(info),
              "settings": {"workers": counts, "sockets": args.sockets, "idle_before_measuring_s": IDLE_S,
                           "payload": args.payload, "generator": args.generator,
                           "worker_threads": args.worker_threads or "default (2)",
                           "concurrency": args.concurrency or "32 per worker", "clients": args.clients,
                           "seconds": args.seconds, "warmup_s": args.warmup,
                           "efficiency": f"rps(N) / (N / {base['workers']} * rps({base['workers']}))"},
              "rows": rows, "goal": {f"efficiency>={GOAL} up to {info['usable_cores']} cores": goal}}
    print(f"\nWorker processes (FACEDET_WORKERS) — {info['cpu']}, {info['usable_cores']} usable cores, "
          f"/v1/detect on {args.payload}, {args.seconds:g} s each, {info['date']}")
    print(table(rows, COLUMNS))
    for k, v in result["goal"].items():
        print(f"goal {k}: " + (", ".join(f"{n} {s}" for n, s in v.items()) or "no count to judge"))
    return finish(args.out, result)


COLUMNS = [("workers", "workers", "d"), ("sockets", "sockets", "s"), ("concurrency", "conc", "d"),
           ("conns", "conns", "s"), ("rps", "req/s", ",.1f"),
           ("efficiency", "efficiency", ".2f"), ("p50_ms", "p50 ms", ".1f"), ("p99_ms", "p99 ms", ".1f"),
           ("errors", "errors", "d"), ("server_cpu_ms_per_req", "srv cpu ms/req", ".2f"),
           ("client_cpu_s", "client cpu s", ".1f"), ("server_pss_mb", "server PSS MB", ".0f"),
           ("load_1min", "load", ".2f")]


if __name__ == "__main__":
    raise SystemExit(main())
