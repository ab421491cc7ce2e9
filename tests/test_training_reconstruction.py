"""The VAE-half figures (training/reconstruction.py) against values worked out by hand on small arrays."""

from __future__ import annotations

import numpy as np
import pytest

from training.reconstruction import correlations, psnr, rank_of_own, ssim, summary


def faces(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 16, 16, 3))


def test_psnr_and_ssim_by_hand() -> None:
    x = np.full((2, 8, 8, 3), 0.5)
    assert psnr(x, x + 0.1) == pytest.approx([20.0, 20.0])  # MSE 0.01 -> 10 log10(1 / 0.01)
    assert psnr(x, x + 0.01)[0] == pytest.approx(40.0)
    assert np.isinf(psnr(x, x)).all()
    f = faces(2)
    assert ssim(f, f) == pytest.approx([1.0, 1.0])
    assert (ssim(f, f[::-1]) < 0.5).all()  # two unrelated noise pictures


def test_correlation_and_ranks_by_hand() -> None:
    a = np.zeros((1, 2, 2, 3))
    a[0, 0, :, :] = 1.0  # top row white: grey [1, 1, 0, 0]
    b = 1.0 - a  # its negative: grey [0, 0, 1, 1]
    corr = correlations(np.concatenate([a, b]), np.concatenate([a, b]))
    np.testing.assert_allclose(corr, [[1.0, -1.0], [-1.0, 1.0]], atol=1e-12)
    corr = np.array([[0.9, 0.2, 0.9], [0.1, 0.5, 0.7], [0.3, 0.3, 0.3]])
    # Row 0: own 0.9, tied with face 2 -> rank 2 (ties count against it); row 1: 0.5 < 0.7 -> 2; row 2: all tied -> 3.
    assert rank_of_own(corr, np.arange(3)).tolist() == [2, 2, 3]


def test_summary_perfect_constant_and_swapped_reconstructions() -> None:
    f = faces(4)
    perfect = summary(f, f)
    assert perfect["identified_top1"] == perfect["identified_top5"] == perfect["morph_ends_identified"] == 1.0
    assert perfect["correlation_own"] == pytest.approx(1.0) and perfect["ssim"] == pytest.approx(1.0)
    mean = summary(f, np.broadcast_to(f.mean(0), f.shape).copy())  # every reconstruction the mean face
    assert mean["psnr_db"] == pytest.approx(mean["mean_face_psnr_db"]) and mean["ssim"] == pytest.approx(mean["mean_face_ssim"])
    # The same picture for everyone: only the face most like the mean face comes out closest to it (chance).
    assert mean["identified_top1"] == mean["chance_top1"] == 0.25 and mean["morph_ends_identified"] == 0.0
    assert mean["identified_top5"] == 1.0  # 4 faces: every one is within the first 5
    grey = summary(f, np.full_like(f, 0.5))  # a flat grey picture: no correlation with anything, all tied
    assert grey["identified_top1"] == 0.0 and grey["correlation_own"] == 0.0
    swapped = summary(f, f[[1, 0, 2, 3]])  # faces 0 and 1 come back as each other
    assert swapped["identified_top1"] == 0.5
    # Pairs (0,1), (1,2), (2,3), (3,0): only (2,3) has both ends identified.
    assert swapped["morph_ends_identified"] == 0.25


def test_the_committed_dbvae_reconstructs_better_than_the_mean_face(tmp_path_factory) -> None:
    """On the held-out faces of the data the committed models were trained on, through the exported graphs."""
    import json
    from pathlib import Path

    from training.data.sources import manifest_split
    from training.evaluation import onnx_reconstruction

    models = Path(__file__).resolve().parents[1] / "models"
    manifest = json.loads((models / "manifest.json").read_text())
    source, _, val_idx = manifest_split(manifest["data"], str(tmp_path_factory.mktemp("cache")))
    r = onnx_reconstruction(models, manifest["models"]["dbvae"], source, val_idx)
    assert r["faces"] == manifest["data"]["val"]["faces"]
    assert r["psnr_db"] > r["mean_face_psnr_db"] + 1.0
    assert r["correlation_own"] > r["correlation_others"]
    assert r["identified_top1"] > 2 * r["chance_top1"]


def test_the_clean_reconstruction_target_is_the_framed_face_without_occluders_or_noise() -> None:
    import torch

    from training.augment import geometry
    from training.config import TrainConfig
    from training.train import augment_batch

    x = torch.rand(8, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0])
    for target_kind in ("augmented", "clean"):
        cfg = TrainConfig(recon_target=target_kind, occlude=1.0, noise=0.1, misframed=0.0)
        images, labels, target = augment_batch(x, y, cfg, torch.Generator().manual_seed(1))
        assert torch.equal(labels, y) and images.shape == target.shape == x.shape
        if target_kind == "augmented":
            assert target is images
        else:
            framed = geometry(x, cfg, torch.Generator().manual_seed(1), x[y == 0])  # the same draws, geometry only
            torch.testing.assert_close(target, framed)
            assert (images - target).abs().mean() > 0.05  # occluders, colour and noise are not in the target
