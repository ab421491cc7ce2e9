"""Options of the training step, for a GPU (issue 19): `--step-options fused_adam,channels_last,bf16,compile`.

Each one leaves the loss the same function of the batch and the weights and changes only how it is computed;
bench/gpu_training.py measures what each is worth (images/s), and the accuracy part of bench/gpu_check.sh
trains with them. None is on by default: the CPU path stays as it is.

* fused_adam     torch.optim.Adam(fused=True): the whole update in one kernel instead of one per tensor
* channels_last  network and batch in NHWC, the layout cuDNN's convolutions prefer
* bf16           torch.autocast(bfloat16) around forward, loss and backward; weights and Adam stay float32
* compile        torch.compile of the network (inductor kernels, fused element-wise work)
* cuda_graphs    torch.compile(mode="reduce-overhead"): the compiled network replayed as CUDA graphs, for
                 steps too small to keep a GPU busy between kernel launches
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

OPTIONS = ("fused_adam", "channels_last", "bf16", "compile", "cuda_graphs")


def parse(text: str) -> tuple[str, ...]:
    """'bf16,fused_adam' -> ('bf16', 'fused_adam'); unknown names and both ways of compiling are refused."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    bad = [n for n in names if n not in OPTIONS]
    if bad:
        raise ValueError(f"--step-options takes {', '.join(OPTIONS)}, not {', '.join(map(repr, bad))}")
    if {"compile", "cuda_graphs"} <= set(names):
        raise ValueError("--step-options: compile and cuda_graphs are two ways of compiling; choose one")
    return names


@dataclass
class Step:
    """What one training step runs: `model` (the network, compiled where asked) and its optimiser."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    options: tuple[str, ...]
    device_type: str

    def begin(self) -> None:
        """Before each step: with CUDA graphs, a new step begins (the last one's graph outputs may be reused)."""
        if "cuda_graphs" in self.options:
            torch.compiler.cudagraph_mark_step_begin()

    def autocast(self):
        if "bf16" in self.options:
            return torch.autocast(self.device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """A batch [B, 3, H, W] in the memory layout the network is in."""
        return x.contiguous(memory_format=torch.channels_last) if "channels_last" in self.options else x


def prepare(net: torch.nn.Module, model: torch.nn.Module, lr: float, weight_decay: float,
            options: tuple[str, ...], device: torch.device) -> Step:
    """net: the bare network (its parameters are optimised); model: what the step calls (net, or net in
    DistributedDataParallel). channels_last converts net in place."""
    if "channels_last" in options:
        net.to(memory_format=torch.channels_last)
    fused = {"fused": True} if "fused_adam" in options else {}
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay, **fused)
    if "compile" in options:
        model = torch.compile(model)
    elif "cuda_graphs" in options:
        model = torch.compile(model, mode="reduce-overhead")
    return Step(model, opt, options, device.type)
