"""Training under torchrun on CPU (gloo): adaptive resampling stays global, batches split exactly,
a dead rank stops the run with an error, and a killed run resumes from its checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from service.process import free_port
from training.data.sources import open_source
from training.distributed import Dist
from training.model import DBVAE, ModelConfig
from training.resampling import sampling_probabilities
from training.train import epoch_batches, predict

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("cache")
    open_source("builtin", cache_dir=str(path), builtin_non_faces=200)  # built once, before any rank runs
    return str(path)


def _rank_probabilities(rank: int, world: int, port: int, cache: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=world)
    dist = Dist(rank, world, rank)
    source = open_source("builtin", cache_dir=cache, builtin_non_faces=200)
    faces = np.flatnonzero(source.labels == 1)
    torch.manual_seed(0)
    model = DBVAE(ModelConfig(latent_dim=12))  # the same weights on every rank
    _, mu = predict(model, source, dist.shard(faces), torch.device("cpu"), batch=16, with_mu=True)
    p = dist.all_gather_cat(sampling_probabilities(mu, 10, 1e-3, dist.all_reduce))
    if rank == 0:
        np.save(out, p.numpy())
    torch.distributed.destroy_process_group()


def test_two_ranks_compute_the_single_process_probabilities(cache, tmp_path):
    out = str(tmp_path / "p.npy")
    mp.spawn(_rank_probabilities, args=(2, free_port(), cache, out), nprocs=2, join=True)
    distributed = np.load(out)

    source = open_source("builtin", cache_dir=cache, builtin_non_faces=200)
    torch.manual_seed(0)
    model = DBVAE(ModelConfig(latent_dim=12))
    _, mu = predict(model, source, np.flatnonzero(source.labels == 1), torch.device("cpu"), with_mu=True)
    single = sampling_probabilities(mu, 10, 1e-3).numpy()
    assert distributed.shape == (100,)
    np.testing.assert_allclose(distributed, single, rtol=1e-9, atol=1e-12)
    assert single.max() / single.min() > 1.5  # not trivially uniform


def test_ranks_split_the_single_process_batches_exactly():
    faces, non_faces = np.arange(0, 50), np.arange(50, 400)
    p = np.random.default_rng(0).random(50)
    p /= p.sum()
    whole = epoch_batches(np.random.default_rng(7), faces, non_faces, p, steps=3, batch=8)
    parts = [epoch_batches(np.random.default_rng(7), faces, non_faces, p, 3, 8, Dist(r, 2, r)) for r in (0, 1)]
    for step in range(3):
        assert len(parts[0][step]) == len(parts[1][step]) == 4
        merged = np.concatenate([parts[0][step], parts[1][step]])
        assert sorted(merged.tolist()) == sorted(whole[step].tolist())
        assert all((b < 50).sum() == 2 for b in (parts[0][step], parts[1][step]))  # half faces per rank


def torchrun(args: list[str], tmp: Path, cache: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{free_port()}", "-m", "training",
           "--cache-dir", cache, "--builtin-non-faces", "200", "--models", "dbvae", "--latent-dim", "12",
           "--out-dir", str(tmp / "models"), "--checkpoint-dir", str(tmp / "ckpt"), "--no-progress",
           "--dist-timeout", "60", "--mine-rounds", "0", "--tune-steps", "10", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def wait_for_epoch(ckpt: Path, epoch: int, proc: subprocess.Popen, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if ckpt.is_file():
            try:
                if torch.load(ckpt, weights_only=False)["epoch"] >= epoch:
                    return
            except Exception:  # being replaced at this very moment: look again
                pass
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint of epoch {epoch} within {limit}s")


def workers(proc: subprocess.Popen) -> list[int]:
    """The rank processes torchrun started (its children)."""
    found = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    return sorted(int(p) for p in found)


def wait_gone(pid: int, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def test_killed_run_resumes_and_finishes(cache, tmp_path):
    ckpt = tmp_path / "ckpt" / "dbvae.pt"
    proc = torchrun(["--epochs", "3", "--steps-per-epoch", "40"], tmp_path, cache)
    wait_for_epoch(ckpt, 1, proc)
    # The whole job, mid-epoch, as a crash or a pulled plug would: workers first (each in its own session).
    ranks = workers(proc)
    for pid in [*ranks, proc.pid]:
        os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)
    for pid in ranks:
        wait_gone(pid)
    killed_at = torch.load(ckpt, weights_only=False)["epoch"]
    assert 1 <= killed_at < 3 and not (tmp_path / "models" / "manifest.json").exists()

    proc = torchrun(["--epochs", "3", "--steps-per-epoch", "40", "--resume"], tmp_path, cache)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert f"resumed dbvae from {ckpt} at epoch {killed_at}" in out, out
    state = torch.load(ckpt, weights_only=False)
    assert [h["epoch"] for h in state["history"]] == [1, 2, 3] and state["train_config"]["resume"]
    manifest = json.loads((tmp_path / "models" / "manifest.json").read_text())
    assert manifest["training"]["processes"] == 2
    assert manifest["models"]["dbvae"]["parity_max_abs_error"] < 1e-4


def test_a_dead_rank_stops_the_run_with_an_error(cache, tmp_path):
    proc = torchrun(["--epochs", "50", "--steps-per-epoch", "40"], tmp_path, cache)
    wait_for_epoch(tmp_path / "ckpt" / "dbvae.pt", 1, proc)
    ranks = workers(proc)
    assert len(ranks) == 2
    os.kill(ranks[-1], signal.SIGKILL)  # one rank dies
    out, _ = proc.communicate(timeout=120)  # stops, no hang
    assert proc.returncode != 0
    assert "training FAILED" in out and "Root Cause" in out and "SIGKILL" in out  # torchrun names the dead rank


def test_gpu_ranks_get_their_local_gpu_and_nccl(monkeypatch):
    """No GPU here, so CUDA is the one edge faked: rank 3 of 4 on its host's GPU 1 must join with NCCL on
    cuda:1 (device_id given, so NCCL binds the right GPU at once); a CPU device joins with gloo."""
    from datetime import timedelta

    from training import distributed

    calls = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.setdefault("set_device", i))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend, **kw: calls.setdefault("init", []).append((backend, kw)))
    world = Dist(rank=3, world=4, local_rank=1)
    device = distributed.device_for(world, "auto")
    assert device == torch.device("cuda", 1) and calls["set_device"] == 1
    distributed.init(world, device, timeout_s=90)
    distributed.init(world, torch.device("cpu"), timeout_s=90)
    assert calls["init"] == [("nccl", {"timeout": timedelta(seconds=90), "device_id": torch.device("cuda", 1)}),
                             ("gloo", {"timeout": timedelta(seconds=90)})]
    assert distributed.device_for(world, "cpu") == torch.device("cpu")


def test_asking_for_cuda_without_one_is_a_clear_error(monkeypatch):
    from training import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.device_for(Dist(), "auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="sees no CUDA device"):
        distributed.device_for(Dist(), "cuda")
