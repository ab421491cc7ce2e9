"""Adaptive resampling of the DB-VAE (Amini et al. 2019, Algorithm 1).

The density of each training face is estimated from per-dimension histograms of its latent mean; a face
in a sparse region of any latent dimension is drawn more often. Whole-tensor operations only: no Python
loop over the latent dimensions, so it costs one pass over an [N, D] tensor.
"""

from __future__ import annotations

import numpy as np
import torch


def histogram_bins(mu: torch.Tensor, bins: int, lo: torch.Tensor | None = None,
                   hi: torch.Tensor | None = None) -> torch.Tensor:
    """Bin index [N, D] of each latent mean. Bins are equal-width between the per-dimension min and max
    (pass lo/hi to share edges, e.g. across processes); the outer edges are open, so values outside
    [lo, hi] fall in the first or last bin."""
    lo = mu.min(0).values if lo is None else lo  # [D]
    hi = mu.max(0).values if hi is None else hi  # [D]
    width = ((hi - lo) / bins).clamp_min(torch.finfo(mu.dtype).tiny)  # [D]; a constant dimension -> 1 bin
    return (mu - lo).div_(width).floor_().clamp_(0, bins - 1).long()


def _identity(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    return t


def sampling_probabilities(mu: torch.Tensor, bins: int, smoothing: float, all_reduce=_identity) -> torch.Tensor:
    """Latent means [N, D] of the training faces -> sampling probability per face [N].

    With `all_reduce` (e.g. Dist.all_reduce), `mu` is this process's shard and the result is each of its
    faces' probability under the *global* distribution: edges, bin counts and normalisers are reduced
    across processes, so the probabilities equal those one process computes over all faces."""
    mu = mu.detach().double()
    n, d = mu.shape
    lo = all_reduce(mu.min(0).values if n else torch.full((d,), torch.inf, dtype=mu.dtype), "min")
    hi = all_reduce(mu.max(0).values if n else torch.full((d,), -torch.inf, dtype=mu.dtype), "max")
    width = ((hi - lo) / bins).clamp_min(torch.finfo(mu.dtype).tiny)  # [D]
    # One flat bin id per (face, dimension): dimension j owns ids j*bins .. j*bins + bins - 1.
    flat = histogram_bins(mu, bins, lo, hi) + torch.arange(d, device=mu.device) * bins  # [N, D]
    counts = torch.bincount(flat.view(-1), minlength=d * bins).view(d, bins).double()
    counts = all_reduce(counts, "sum")  # [D, bins], over all faces
    density = counts / (counts.sum(1, keepdim=True) * width.unsqueeze(1))  # [D, bins], integrates to 1
    smoothed = density + smoothing
    smoothed = smoothed / smoothed.sum(1, keepdim=True)
    # Weight of a face in dimension j: 1 / smoothed density of its bin, normalised over all faces.
    norm = (counts / smoothed).sum(1, keepdim=True)  # [D, 1]
    table = (1.0 / smoothed / norm).view(-1)  # [D * bins]
    p = table[flat].max(1).values  # [N]: a face rare in any dimension is rare
    total = all_reduce(p.sum().reshape(1), "sum")
    return p / total


def distribution_stats(p: torch.Tensor) -> dict[str, float]:
    """How far the sampling distribution is from uniform: 1.0 / 1.0 / 1.0 means uniform."""
    p = p.double()
    n = p.numel()
    ess = 1.0 / (p**2).sum()  # effective sample size
    return {
        "max_min_ratio": float(p.max() / p.min().clamp_min(1e-300)),
        "ess_fraction": float(ess / n),
        "max_over_uniform": float(p.max() * n),
    }


def reference_probabilities(mu: np.ndarray, bins: int, smoothing: float) -> np.ndarray:
    """The MIT 6.S191 lab's straightforward loop, one latent dimension at a time, in NumPy: the slow reference
    that sampling_probabilities is tested against (tests/test_training_resampling.py) and timed against
    (bench/training.py). mu [N, D] -> p [N]; not used in training."""
    p = np.zeros(mu.shape[0])
    for i in range(mu.shape[1]):
        density, edges = np.histogram(mu[:, i], density=True, bins=bins)
        edges[0], edges[-1] = -np.inf, np.inf
        idx = np.digitize(mu[:, i], edges)
        smoothed = density + smoothing
        smoothed = smoothed / smoothed.sum()
        w = 1.0 / smoothed[idx - 1]
        p = np.maximum(p, w / w.sum())
    return p / p.sum()
