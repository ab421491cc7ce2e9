"""Data-parallel training under torchrun (PyTorch DistributedDataParallel).

    torchrun --standalone --nproc_per_node=2 -m training --source h5 --h5 data/train_face.h5

Single-process runs never touch torch.distributed: `Dist()` is then a world of one whose collectives are
no-ops, so one code path serves both. Backend NCCL on GPUs, gloo on CPUs; one device per local rank;
collectives time out (`--dist-timeout`), so a dead rank stops the run with an error instead of a hang.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """In-place all-reduce (sum | min | max); identity in a world of one."""
        if self.enabled:
            dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN,
                                   "max": dist.ReduceOp.MAX}[op])
        return t

    def all_gather_cat(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate each rank's 1-D tensor in rank order (lengths may differ by rank)."""
        if not self.enabled:
            return t
        n = torch.tensor([t.numel()], device=t.device)
        sizes = [torch.zeros_like(n) for _ in range(self.world)]
        dist.all_gather(sizes, n)
        longest = int(max(s.item() for s in sizes))
        padded = torch.zeros(longest, dtype=t.dtype, device=t.device)
        padded[: t.numel()] = t
        parts = [torch.zeros_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes)])

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def shard(self, items):
        """This rank's contiguous share of a sequence (shares differ in length by at most one)."""
        n = len(items)
        lo, hi = n * self.rank // self.world, n * (self.rank + 1) // self.world
        return items[lo:hi]


def from_environment() -> Dist:
    """The world torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK; a world of one without them."""
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return Dist()
    return Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def init(world: Dist, device: torch.device, timeout_s: float) -> None:
    """Join the process group: NCCL for CUDA devices, gloo otherwise."""
    if not world.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s),
                            **({"device_id": device} if device.type == "cuda" else {}))


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def device_for(world: Dist, name: str) -> torch.device:
    """auto: the local rank's GPU when there is one, else the CPU."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but PyTorch sees no CUDA device")
    torch.cuda.set_device(world.local_rank)
    return torch.device("cuda", world.local_rank)
