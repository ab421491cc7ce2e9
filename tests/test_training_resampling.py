"""Adaptive resampling: rare latent modes are drawn more often; the vectorised code equals the
straightforward per-dimension NumPy computation of the lab."""

import numpy as np
import pytest
import torch

from training.resampling import distribution_stats, histogram_bins, reference_probabilities, sampling_probabilities


def test_rare_mode_gets_higher_probability():
    rng = np.random.default_rng(0)
    common = rng.normal(0.0, 1.0, size=(190, 4))
    rare = rng.normal(8.0, 0.3, size=(10, 4))  # a small, separate cluster: the under-represented faces
    p = sampling_probabilities(torch.from_numpy(np.vstack([common, rare])), bins=10, smoothing=1e-3).numpy()
    assert p.sum() == pytest.approx(1.0)
    assert p[190:].min() > np.median(p[:190]) * 3  # each rare face beats a typical face threefold
    assert p[190:].mean() > p[:190].mean()
    assert p[190:].sum() > 1.5 * 10 / 200  # the rare 5% get at least 1.5x their share of the draws


def test_vectorised_equals_per_dimension_numpy():
    rng = np.random.default_rng(1)
    mu = np.concatenate([rng.normal(size=(500, 16)), rng.standard_t(2, size=(37, 16)) * 3])
    got = sampling_probabilities(torch.from_numpy(mu), bins=10, smoothing=1e-3).numpy()
    np.testing.assert_allclose(got, reference_probabilities(mu, bins=10, smoothing=1e-3), rtol=1e-9, atol=1e-15)


def test_outer_edges_are_open_with_shared_edges():
    mu = torch.tensor([[-5.0], [0.0], [0.5], [1.0], [9.0]])
    idx = histogram_bins(mu, bins=4, lo=torch.tensor([0.0]), hi=torch.tensor([1.0]))
    assert idx[:, 0].tolist() == [0, 0, 2, 3, 3]


def test_uniform_latents_give_near_uniform_sampling_and_stats_show_it():
    mu = torch.linspace(0, 1, 1000).unsqueeze(1).repeat(1, 3)  # evenly spread: every bin equally full
    p = sampling_probabilities(mu, bins=10, smoothing=1e-3)
    stats = distribution_stats(p)
    assert stats["max_min_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert stats["ess_fraction"] == pytest.approx(1.0, abs=1e-6)
    skewed = distribution_stats(torch.tensor([0.7, 0.1, 0.1, 0.1]))
    assert skewed["max_min_ratio"] == pytest.approx(7.0)
    assert skewed["ess_fraction"] == pytest.approx(1 / (0.49 + 0.03) / 4)
