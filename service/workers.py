"""Several worker processes on one port (FACEDET_WORKERS > 1), and the supervisor that keeps them.

`python -m service` checks the settings and models once (service/__main__.py), binds the port, then runs the
supervisor. It spawns the workers (spawn, not fork: ONNX Runtime's threads already exist in the process and a fork
would copy none of them). Each opens its own ONNX Runtime sessions and serves the port with DrainingServer and the
same HTTP protocol as a single process.

Sockets (FACEDET_REUSE_PORT, on by default where the kernel balances SO_REUSEPORT: Linux): each worker listens on
its own socket of the port, from when it is warmed up, and the kernel hands each new connection to one of the
listening sockets by a hash of its addresses: kept-alive connections end up spread at random (of 64 on two workers,
22-42 on each in about 20 tries here). The supervisor holds the port with a socket that is bound but never
listens, so it gets none. With one shared socket instead, the worker that wakes first accepts every connection
waiting (asyncio accepts in a loop), so connections that open together on an idle service mostly go to one worker
and stay there. Measured here with wrk's 64 opening at once on two idle workers, 10 starts each: the busier worker
held 40-58 (mean 46) with a shared socket, 32-42 (mean 37) with a socket each (bench/scaling.py, its `shared` and
`own` rows). The price: a worker that dies resets the connections still waiting in its own accept queue, which a
shared socket would hand to another.

Metrics: prometheus_client's multiprocess mode, in a private temporary PROMETHEUS_MULTIPROC_DIR made before the
workers start and removed at exit; /metrics in any worker answers for all of them (service/metrics.py). Readiness:
each worker publishes its own in the facedet_ready gauge, and /readyz answers 200 only when every worker is ready.

Signals: SIGTERM or SIGINT to the supervisor goes on to every worker, and each drains as a single process does
(readiness 503 for FACEDET_SHUTDOWN_DELAY_S, then graceful shutdown); a second one, passed on too, stops them at
once. Workers run in their own process group, so Ctrl-C in a terminal reaches the supervisor alone and each worker
gets the signal once, not twice (twice means "stop now"). A worker that dies otherwise is replaced at once, or
after 1, 2, 4 ... 30 s when it keeps dying within 10 s of its start; its live gauges go (mark_process_dead), so
readiness is 503 until the replacement has warmed up, while the other workers keep serving. A worker that cannot start (exit status 3, uvicorn's for that) stops the service: a replacement
would fail the same way. A worker whose supervisor is killed drains and exits by itself (DrainingServer).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess

from prometheus_client.multiprocess import mark_process_dead

from service.admission import Admission
from service.cores import usable_cores
from service.main import create_app
from service.manifest import ModelError
from service.metrics import Metrics
from service.runtime import Runtime
from service.server import DrainingServer, server_config
from service.settings import Settings

log = logging.getLogger("service.workers")
STARTUP_FAILURE = 3  # uvicorn's exit status for a server that could not start
# A worker that dies sooner than this after it started counts as a crash at start: its replacement waits
# restart_delay(n) after the n-th in a row, so a worker that crashes every time does not spin the supervisor.
QUICK_DEATH_S = 10.0
MAX_RESTART_DELAY_S = 30.0
# A drained worker has had the shutdown delay and the graceful timeout; this long more and it is killed.
STOP_MARGIN_S = 10.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s"  # which process said it
SPAWN = multiprocessing.get_context("spawn")


def worker_count(settings: Settings, providers: Iterable[str]) -> int:
    """FACEDET_WORKERS; for auto, one per usable core, or 1 when the sessions run on an accelerator (`providers`:
    the ones they actually got), where each worker would hold its own device context and memory."""
    if settings.workers is not None:
        return settings.workers
    return 1 if any(p != "CPUExecutionProvider" for p in providers) else usable_cores()


def restart_delay(quick_deaths: int) -> float:
    """Seconds before replacing a worker after `quick_deaths` crashes at start in a row: 0 for a worker that had
    run a while, then 1, 2, 4, ... up to MAX_RESTART_DELAY_S."""
    return 0.0 if quick_deaths <= 0 else min(MAX_RESTART_DELAY_S, 2.0 ** (quick_deaths - 1))


def supervise(settings: Settings, count: int) -> int:
    """Bind, serve with `count` workers until a signal, drain them; the process's exit status."""
    logging.basicConfig(format=LOG_FORMAT, force=True)
    sock = bind(settings)
    with tempfile.TemporaryDirectory(prefix="facedet-metrics-") as metrics_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # inherited by the workers, read as they import
        log.info("%d worker processes (%s), metrics in %s", count, "FACEDET_WORKERS" if settings.workers else
                 f"auto: {usable_cores()} usable cores", metrics_dir)
        return Supervisor(settings, count, sock, metrics_dir).run()


def reuse_port(settings: Settings) -> bool:
    """Whether each worker gets its own socket of the port: asked for, and the kernel balances SO_REUSEPORT
    (Linux; the BSDs' and macOS's SO_REUSEPORT does not spread connections)."""
    return settings.reuse_port and sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind(settings: Settings) -> socket.socket:
    """The supervisor's socket on FACEDET_HOST:FACEDET_PORT, bound, not listening: the one every worker serves, or,
    with reuse_port, what holds the port while the workers listen on their own sockets (worker_socket).

    The port is bound first as uvicorn binds it, without SO_REUSEPORT, so a port that another server listens on
    fails here with uvicorn's log line and exit status: with the option, a second service of the same user would
    join the first one's sockets silently and take a share of its connections. Only then is it held with it."""
    # Only its address and log settings are used here: every worker makes its own app and config.
    sock = server_config(settings, "service.main:create_app").bind_socket()
    if not reuse_port(settings):
        return sock
    address = sock.getsockname()  # the port bound, should FACEDET_PORT be 0
    sock.close()
    held = _reuse_port_socket(sock.family)
    try:
        held.bind(address)
    except OSError as exc:  # taken in the moment between the two binds
        held.close()
        log.error("cannot hold %s: %s", address, exc)
        sys.exit(STARTUP_FAILURE)
    held.set_inheritable(True)
    return held


def worker_socket(settings: Settings, held: socket.socket) -> socket.socket:
    """The socket a worker serves: its own on the supervisor's address with reuse_port (listened on by uvicorn once
    the worker is warmed up, so no connection waits in the queue of a worker still starting), else the shared one."""
    if not reuse_port(settings):
        return held
    own = _reuse_port_socket(held.family)
    own.bind(held.getsockname())
    held.close()
    return own


def _reuse_port_socket(family: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


class Supervisor:
    def __init__(self, settings: Settings, count: int, sock: socket.socket, metrics_dir: str) -> None:
        self.settings, self.sock, self.metrics_dir = settings, sock, metrics_dir
        self.count = count
        self.workers: list[BaseProcess] = []
        self.started = [0.0] * count  # when each slot's worker was started (monotonic)
        self.quick_deaths = [0] * count  # each slot's crashes at start in a row
        self.respawn_at: dict[int, float] = {}  # slot -> when its dead worker is replaced
        self.signals: list[int] = []  # received, in order; handled in the main loop, not in the handler
        self.failed = False

    def run(self) -> int:
        # The signal's byte on this socket wakes the wait below, which also watches every worker's exit.
        self._wake, wake_w = socket.socketpair()
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno())
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda received, frame: self.signals.append(received))
        try:
            self.workers = [self._spawn(i) for i in range(self.count)]
            while not self.signals and not self.failed:
                live = [p for i, p in enumerate(self.workers) if i not in self.respawn_at]
                due = min(self.respawn_at.values(), default=None)
                self._wait(live, None if due is None else max(0.0, due - time.monotonic()))
                self._replace_dead()
            self._stop()
        finally:
            signal.set_wakeup_fd(-1)
            wake_w.close()
            self._wake.close()
        return STARTUP_FAILURE if self.failed else 0

    def _spawn(self, index: int) -> BaseProcess:
        proc = SPAWN.Process(target=serve_worker, name=f"facedet-worker-{index + 1}",
                             args=(self.settings, self.count, self.sock, self.metrics_dir))
        proc.start()
        self.started[index] = time.monotonic()
        log.info("worker %d started: pid %d", index + 1, proc.pid)
        return proc

    def _wait(self, procs: list[BaseProcess], timeout: float | None) -> None:
        wait([*(p.sentinel for p in procs), self._wake], timeout)
        try:
            while self._wake.recv(64, socket.MSG_DONTWAIT):
                pass
        except BlockingIOError:
            pass

    def _replace_dead(self) -> None:
        """Note the workers that died (a crash at start delays its replacement: restart_delay), then start the
        replacements that are due."""
        now = time.monotonic()
        for index, proc in enumerate(self.workers):
            if index in self.respawn_at or proc.exitcode is None:
                continue
            mark_process_dead(proc.pid, self.metrics_dir)
            if proc.exitcode == STARTUP_FAILURE:
                log.error("worker %d (pid %d) could not start: stopping the service", index + 1, proc.pid)
                self.failed = True
                continue
            quick = now - self.started[index] < QUICK_DEATH_S
            self.quick_deaths[index] = self.quick_deaths[index] + 1 if quick else 0
            delay = restart_delay(self.quick_deaths[index])
            log.warning("worker %d (pid %d) %s: starting a replacement%s", index + 1, proc.pid, _ended(proc),
                        f" in {delay:g} s ({self.quick_deaths[index]} deaths at start in a row)" if delay else "")
            self.respawn_at[index] = now + delay
        for index, when in list(self.respawn_at.items()):
            if when <= now and not self.failed:
                del self.respawn_at[index]
                self.workers[index].close()
                self.workers[index] = self._spawn(index)

    def _stop(self) -> None:
        """Every worker drains as a single process does on SIGTERM; a second signal here stops them at once."""
        if not self.signals:  # a worker could not start: the others drain
            self.signals.append(signal.SIGTERM)
        allowed = self.settings.shutdown_delay_s + self.settings.graceful_timeout_s + STOP_MARGIN_S
        deadline, passed = time.monotonic() + allowed, 0
        while live := [p for p in self.workers if p.exitcode is None]:
            for sig in self.signals[passed:]:
                log.info("%s: stopping %d workers", signal.Signals(sig).name, len(live))
                for proc in live:
                    os.kill(proc.pid, sig)
            passed = len(self.signals)
            if time.monotonic() >= deadline:
                log.error("%d workers still running %.0fs after the stop: killing them", len(live), allowed)
                for proc in live:
                    proc.kill()
                    proc.join()
                break
            self._wait(live, deadline - time.monotonic())
        for proc in self.workers:
            mark_process_dead(proc.pid, self.metrics_dir)
        log.info("all workers stopped")


def _ended(proc: BaseProcess) -> str:
    code = proc.exitcode or 0
    return f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"


def serve_worker(settings: Settings, count: int, sock: socket.socket, metrics_dir: str) -> None:
    """A worker process's whole life: its own models, app and server, on the port the supervisor bound."""
    os.setpgid(0, 0)  # out of the terminal's process group: see the module's docstring
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    parent = os.getppid()
    try:
        try:
            runtime = Runtime.load(settings)
        except ModelError as exc:  # checked by the supervisor, so changed since
            log.error("cannot start: %s", exc)
            sys.exit(STARTUP_FAILURE)
        admission = Admission(settings)
        app = create_app(settings, runtime, admission, Metrics(metrics_dir, count))
        server = DrainingServer(server_config(settings, app), admission, settings.shutdown_delay_s, parent)
        server.run(sockets=[worker_socket(settings, sock)])
    except KeyboardInterrupt:  # SIGINT before the server's handlers were in, or raised again after its drain
        pass
