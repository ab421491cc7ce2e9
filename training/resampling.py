"""Adaptive resampling of the DB-VAE (Amini et al. 2019, Algorithm 1).

The density of each training face is estimated from per-dimension histograms of its latent mean; a face
in a sparse region of any latent dimension is drawn more often. Whole-tensor operations only: no Python
loop over the latent dimensions, so it costs one pass over an [N, D] tensor.
"""

from __future__ import annotations

import torch


def histogram_bins(mu: torch.Tensor, bins: int, lo: torch.Tensor | None = None,
                   hi: torch.Tensor | None = None) -> torch.Tensor:
    """Bin index [N, D] of each latent mean. Bins are equal-width between the per-dimension min and max
    (pass lo/hi to share edges, e.g. across processes); the outer edges are open, so values outside
    [lo, hi] fall in the first or last bin."""
    lo = mu.min(0).values if lo is None else lo  # [D]
    hi = mu.max(0).values if hi is None else hi  # [D]
    width = ((hi - lo) / bins).clamp_min(torch.finfo(mu.dtype).tiny)  # [D]; a constant dimension -> 1 bin
    return ((mu - lo) / width).floor().clamp(0, bins - 1).long()


def bin_counts(idx: torch.Tensor, bins: int) -> torch.Tensor:
    """[N, D] bin indices -> [D, bins] counts."""
    n, d = idx.shape
    counts = torch.zeros(d, bins, dtype=torch.float64, device=idx.device)
    return counts.scatter_add_(1, idx.T, torch.ones(d, n, dtype=torch.float64, device=idx.device))


def probabilities_from_counts(idx: torch.Tensor, counts: torch.Tensor, width: torch.Tensor,
                              smoothing: float) -> torch.Tensor:
    """Sampling probability [N] from bin indices [N, D], counts [D, bins] and bin widths [D]."""
    n_total = counts.sum(1, keepdim=True)  # [D, 1]
    density = counts / (n_total * width.to(counts.dtype).unsqueeze(1))  # [D, bins], integrates to 1
    smoothed = density + smoothing
    smoothed = smoothed / smoothed.sum(1, keepdim=True)
    weights = 1.0 / torch.gather(smoothed, 1, idx.T)  # [D, N]: rare bin -> large weight
    weights = weights / weights.sum(1, keepdim=True)  # normalised per dimension
    p = weights.max(0).values  # [N]: a face rare in any dimension is rare
    return (p / p.sum()).to(torch.float64)


def sampling_probabilities(mu: torch.Tensor, bins: int = 10, smoothing: float = 1e-3) -> torch.Tensor:
    """Latent means [N, D] of all training faces -> sampling probability per face [N], summing to 1."""
    mu = mu.detach().double()
    lo, hi = mu.min(0).values, mu.max(0).values
    idx = histogram_bins(mu, bins, lo, hi)
    width = ((hi - lo) / bins).clamp_min(torch.finfo(mu.dtype).tiny)
    return probabilities_from_counts(idx, bin_counts(idx, bins), width, smoothing)


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
