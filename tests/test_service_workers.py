"""FACEDET_WORKERS: several worker processes on one port, through the real `python -m service` on the committed
models: both answer, /metrics adds them up, /readyz waits for every one, a killed worker is replaced while the port
keeps answering, SIGTERM drains them all, a killed supervisor leaves no worker behind; and the auto count, from the
CPU affinity and a cgroup quota (fake cgroup files)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from service.__main__ import main
from service.cores import cpu_quota, usable_cores
from service.process import ESTABLISHED, LISTEN, free_port, tcp_sockets
from service.settings import DEFAULT_MODELS_DIR, SettingsError, load_settings
from service.workers import worker_count
from tests.utils.images import encode, picture
from tests.utils.server import ServerProcess

REPO = Path(__file__).resolve().parent.parent
AFFINITY = len(os.sched_getaffinity(0))
DETECTED = 'facedet_requests_total{endpoint="/v1/detect",method="POST",status="200"}'


@contextmanager
def workers(tmp_path: Path, **env: str) -> Iterator[ServerProcess]:
    """`python -m service` with two workers, ready (every worker warmed up), on the committed models."""
    server = ServerProcess(sys.executable, REPO, {"FACEDET_WORKERS": "2", "FACEDET_PROVIDERS": "CPUExecutionProvider",
                                                  **env}, tmp_path / "server.log")
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def metric(text: str, series: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(series + " "))


def worker_requests(server: ServerProcess) -> dict[int, float]:
    """pid -> requests served, from the one per-worker series in /metrics."""
    text = httpx.get(f"{server.url}/metrics").text
    series = re.findall(r'^facedet_worker_requests\{pid="(\d+)"\} (\S+)$', text, re.MULTILINE)
    return {int(pid): float(value) for pid, value in series}


def children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def detect(server: ServerProcess, photo: bytes) -> float:
    """A fresh connection each time, so the kernel picks a worker for every request."""
    response = httpx.post(f"{server.url}/v1/detect", files={"image": ("p.jpg", photo, "image/jpeg")}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["results"][0]["face_probability"]


PHOTO = encode(picture(320, 240, seed=5), "JPEG", quality=90)


def test_both_workers_answer_and_metrics_add_up_across_them(tmp_path: Path) -> None:
    with workers(tmp_path) as server:
        served = worker_requests(server)
        assert len(served) == 2 and set(served) <= children(server.proc.pid) and set(served.values()) == {0.0}
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: detect(server, PHOTO), range(24)))
        assert len(set(answers)) == 1 and 0.0 <= answers[0] <= 1.0  # the same models in both: the same answer
        text = httpx.get(f"{server.url}/metrics").text
        assert metric(text, DETECTED) == 24  # one scrape, both workers' counters
        assert metric(text, 'facedet_request_duration_seconds_count{endpoint="/v1/detect"}') == 24
        wait_for(lambda: sum(worker_requests(server).values()) == 24, timeout=5)  # published every 0.25 s
        assert all(n > 0 for n in worker_requests(server).values()), worker_requests(server)
        assert metric(text, "facedet_ready") == 2
        assert httpx.get(f"{server.url}/readyz").json()["status"] == "ready"


CROP = encode(picture(64, 64, seed=6), "PNG")


def test_each_worker_listens_on_its_own_socket_and_a_taken_port_still_fails(tmp_path: Path) -> None:
    with workers(tmp_path) as server:
        pids = sorted(worker_requests(server))
        own = [tcp_sockets(pid, server.port, LISTEN) for pid in pids]
        assert all(len(s) == 1 for s in own) and own[0] != own[1], own  # SO_REUSEPORT: a socket each
        assert tcp_sockets(server.proc.pid, server.port, LISTEN) == set()  # the supervisor's holds the port only
        clients = [httpx.Client(base_url=server.url, timeout=30) for _ in range(64)]  # kept alive, as wrk's are
        try:
            for client in clients:
                response = client.post("/v1/detect", files={"image": ("c.png", CROP, "image/png")})
                assert response.status_code == 200, response.text
            held = [len(tcp_sockets(pid, server.port, ESTABLISHED)) for pid in pids]
        finally:
            for client in clients:
                client.close()
        # The kernel spreads them by a hash of their addresses: 32 +- 4 each if it were fair coin flips; 22 to 32
        # on the emptier worker in ~20 tries here. Under 12 would be a hash that hardly spreads them at all.
        assert sum(held) == 64 and min(held) >= 12, held
        # Another service on the same port fails as without SO_REUSEPORT, rather than joining this one's sockets.
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("FACEDET_")},
               "FACEDET_WORKERS": "2", "FACEDET_PROVIDERS": "CPUExecutionProvider"}
        second = subprocess.run([sys.executable, "-m", "service", "--port", str(server.port)], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=120, check=False)
        assert second.returncode == 3 and "address already in use" in (second.stdout + second.stderr).lower()
        assert detect(server, PHOTO) >= 0.0 and tcp_sockets(pids[0], server.port, LISTEN) == own[0]


def test_a_port_taken_between_the_two_binds_stops_the_start(monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    import service.workers as workers_module

    class Taken(socket.socket):
        def bind(self, address: object) -> None:
            raise OSError(98, "Address already in use")

    monkeypatch.setattr(workers_module, "_reuse_port_socket", lambda family: Taken(family, socket.SOCK_STREAM))
    with pytest.raises(SystemExit) as stopped:
        workers_module.bind(load_settings(port=free_port(), reuse_port=True))
    assert stopped.value.code == workers_module.STARTUP_FAILURE and "cannot hold" in caplog.text


def test_shared_socket_when_reuse_port_is_off(tmp_path: Path) -> None:
    with workers(tmp_path, FACEDET_REUSE_PORT="false") as server:
        pids = sorted(worker_requests(server))
        shared = [tcp_sockets(pid, server.port, LISTEN) for pid in [server.proc.pid, *pids]]
        assert len(shared[0]) == 1 and shared[0] == shared[1] == shared[2], shared  # one socket, every process
        with ThreadPoolExecutor(4) as pool:
            assert len(set(pool.map(lambda _: detect(server, PHOTO), range(8)))) == 1


def test_a_killed_worker_is_replaced_and_readiness_waits_for_it(tmp_path: Path) -> None:
    with workers(tmp_path) as server:
        detect(server, PHOTO)
        wait_for(lambda: sum(worker_requests(server).values()) == 1, timeout=5)
        [victim] = [pid for pid, n in worker_requests(server).items() if n == 1]
        [survivor] = set(worker_requests(server)) - {victim}
        os.kill(victim, signal.SIGKILL)
        details: list[str] = []

        def ready() -> bool:
            response = httpx.get(f"{server.url}/readyz")
            if response.status_code == 503:
                details.append(response.json()["detail"])
            return response.status_code == 200

        wait_for(lambda: not ready(), timeout=5)  # the supervisor has seen it die
        detect(server, PHOTO)  # the port keeps answering while the replacement starts
        assert httpx.get(f"{server.url}/healthz").json() == {"status": "alive"}
        wait_for(ready, timeout=60)
        assert set(details) == {"1 of 2 worker processes ready: the others are starting, being replaced or stopping"}
        now = worker_requests(server)
        assert victim not in now and survivor in now and set(now) <= children(server.proc.pid) and len(now) == 2
        text = httpx.get(f"{server.url}/metrics").text
        assert metric(text, "facedet_ready") == 2
        assert metric(text, DETECTED) == 2  # the dead worker's request is still counted
        assert f"(pid {victim}) was killed by SIGKILL: starting a replacement" in server.log.read_text()
        assert server.proc.poll() is None


def test_sigterm_drains_every_worker_then_the_supervisor_exits_0(tmp_path: Path) -> None:
    with workers(tmp_path, FACEDET_SHUTDOWN_DELAY_S="2") as server:
        pids = set(worker_requests(server))
        metrics_dir = Path(re.search(r"metrics in (\S+)", server.log.read_text()).group(1))
        assert metrics_dir.is_dir()
        server.proc.send_signal(signal.SIGTERM)
        sent_at = time.monotonic()
        wait_for(lambda: httpx.get(f"{server.url}/readyz").status_code == 503, timeout=1)
        time.sleep(0.3)  # both workers have had the signal by now
        for _ in range(8):  # fresh connections: whichever worker answers says it is shutting down
            ready = httpx.get(f"{server.url}/readyz")
            assert ready.status_code == 503 and ready.json()["detail"].startswith("shutting down"), ready.text
        detect(server, PHOTO)  # still served in the drain window
        assert time.monotonic() - sent_at < 2
        assert server.proc.wait(timeout=30) == 0
        assert time.monotonic() - sent_at >= 2
        text = server.log.read_text()
    assert text.count("SIGTERM: readiness is now 503; stopping in 2.0s") == 2
    assert text.count("Finished server process") == 2 and "all workers stopped" in text and "Traceback" not in text
    assert not any(running(pid) for pid in pids)
    assert not metrics_dir.exists()


def test_workers_drain_and_exit_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    with workers(tmp_path, FACEDET_SHUTDOWN_DELAY_S="0.5") as server:
        pids = set(worker_requests(server))
        metrics_dir = Path(re.search(r"metrics in (\S+)", server.log.read_text()).group(1))
        server.proc.kill()
        server.proc.wait()
        wait_for(lambda: not any(running(pid) for pid in pids), timeout=20)
        text = server.log.read_text()
    shutil.rmtree(metrics_dir)  # the supervisor removes it; killed, it cannot
    assert text.count("is gone: draining") == 2 and text.count("Finished server process") == 2


def test_bad_model_stops_the_supervisor_before_any_worker(tmp_path: Path) -> None:
    models = Path(shutil.copytree(DEFAULT_MODELS_DIR, tmp_path / "models"))
    data = bytearray((models / "cnn.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (models / "cnn.onnx").write_bytes(bytes(data))
    env = {**os.environ, "FACEDET_MODELS_DIR": str(models), "FACEDET_WORKERS": "2"}
    result = subprocess.run([sys.executable, "-m", "service"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=60, check=False)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and "cannot start: " in lines[0] and "cnn.onnx" in lines[0]


def test_workers_setting_and_flag(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("FACEDET_WORKERS", "auto")
    assert load_settings().workers is None and load_settings(workers="3").workers == 3
    auto = load_settings()
    assert worker_count(auto, ["CPUExecutionProvider"]) == usable_cores()
    assert worker_count(auto, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == 1  # a device context each
    assert worker_count(load_settings(workers=3), ["CUDAExecutionProvider"]) == 3
    for bad in ("0", "many"):
        with pytest.raises(SettingsError, match="FACEDET_WORKERS"):
            load_settings(workers=bad)
    assert main(["--workers", "0"]) == 2
    assert "cannot start: bad setting FACEDET_WORKERS='0'" in caplog.text


def cgroup(tmp_path: Path, membership: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A fake /sys/fs/cgroup tree with `files`, and the /proc/self/cgroup line that puts us in it."""
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    root.mkdir(exist_ok=True)
    (tmp_path / "proc_cgroup").write_text(membership)
    return root, tmp_path / "proc_cgroup"


@pytest.mark.parametrize(("membership", "files", "quota"), [
    ("0::/\n", {"cpu.max": "150000 100000\n"}, 1.5),  # a container with --cpus=1.5
    ("0::/\n", {"cpu.max": "max 100000\n"}, None),  # no quota
    ("0::/\n", {}, None),  # no cpu controller in this cgroup
    ("0::/a/b\n", {"a/b/cpu.max": "400000 100000", "a/cpu.max": "200000 100000"}, 2.0),  # the parent binds
    ("0::/docker/abc\n", {"cpu.max": "300000 100000"}, 3.0),  # no cgroup namespace: the host's path
    ("0::/\n", {"cpu.max": "oops"}, None),
    ("4:cpu,cpuacct:/x\n0::/\n", {"cpu,cpuacct/x/cpu.cfs_quota_us": "50000", "cpu,cpuacct/x/cpu.cfs_period_us":
                                  "100000"}, 0.5),  # cgroup v1
    ("4:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),  # v1, no quota
])
def test_usable_cores_follow_the_cgroup_quota(tmp_path: Path, membership: str, files: dict[str, str],
                                              quota: float | None) -> None:
    root, proc = cgroup(tmp_path, membership, files)
    assert cpu_quota(root, proc) == quota
    expected = AFFINITY if quota is None else max(1, min(AFFINITY, int(quota)))
    assert usable_cores(root, proc) == expected


class _DeadOnArrival:
    """Stands in for a worker process in the supervisor's bookkeeping: alive until exitcode is set."""

    def __init__(self, pid: int) -> None:
        self.pid, self.exitcode = pid, None

    def close(self) -> None:
        pass


def test_a_worker_that_keeps_dying_at_start_is_replaced_later_each_time(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import service.workers as workers_module

    assert [workers_module.restart_delay(n) for n in range(8)] == [0, 1, 2, 4, 8, 16, 30, 30]
    clock = [100.0]
    monkeypatch.setattr(workers_module.time, "monotonic", lambda: clock[0])
    supervisor = workers_module.Supervisor(load_settings(workers=2), 1, None, str(tmp_path))
    procs: list[_DeadOnArrival] = []

    def spawn(index: int) -> _DeadOnArrival:
        procs.append(_DeadOnArrival(1000 + len(procs)))
        supervisor.started[index] = clock[0]
        return procs[-1]

    monkeypatch.setattr(supervisor, "_spawn", spawn)
    supervisor.workers = [spawn(0)]
    delays = []
    for _ in range(4):  # dies 1 s after each start
        procs[-1].exitcode = -9
        clock[0] += 1.0
        supervisor._replace_dead()
        delays.append(supervisor.respawn_at[0] - clock[0])
        assert len(procs) == len(delays)  # not replaced yet
        clock[0] = supervisor.respawn_at[0]
        supervisor._replace_dead()
    assert delays == [1.0, 2.0, 4.0, 8.0] and len(procs) == 5
    procs[-1].exitcode = -9  # one that served for a minute is replaced at once
    clock[0] += 60.0
    supervisor._replace_dead()
    assert supervisor.respawn_at == {} and len(procs) == 6 and supervisor.workers == [procs[-1]]
