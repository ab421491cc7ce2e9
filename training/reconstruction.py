"""How well the DB-VAE's decoder gives back the faces it encodes: the other half of what the service offers
(/v1/reconstruct, /v1/morph).

Per held-out face: PSNR and SSIM (scikit-image) of decode(mu) against the face itself. Identifiability: is the
reconstruction closer to its own face than to every other held-out face (top-1), or among the 5 closest
(top-5)? "Closer" is the Pearson correlation of the two pictures in grey, 64x64, so a reconstruction that is
the same mean face for everyone scores at chance (1 / N). Morph end frames: for pairs of held-out faces
(a, b), frame 0 of the morph must be identified as a and the last frame as b, and the morph decoded over
MORPH_STEPS frames must come nearer to b frame by frame (RMS pixel distance, as /v1/morph reports it). Every
figure comes with the same figure for a mean-face baseline (the mean of the evaluated faces as every
reconstruction). At most MAX_FACES faces are scored (the first of the split), so a CelebA-size split costs
seconds, not a 40k x 40k correlation matrix.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

LUMA = np.array([0.299, 0.587, 0.114])
MAX_FACES = 1000
MAX_MORPHS = 200  # pairs whose whole morph is decoded
MORPH_STEPS = 8  # frames per morph, both ends included: /v1/morph's default


def psnr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per image PSNR in dB of images [N, H, W, 3] in [0, 1] (peak 1); inf where equal."""
    mse = ((x.astype(np.float64) - y.astype(np.float64)) ** 2).reshape(len(x), -1).mean(1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(1.0 / mse)


def ssim(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per image SSIM of RGB images [N, H, W, 3] in [0, 1] (scikit-image's, averaged over the channels)."""
    return np.array([structural_similarity(a, b, channel_axis=-1, data_range=1.0)
                     for a, b in zip(x.astype(np.float64), y.astype(np.float64))])


def correlations(recon: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Pearson correlation in grey of every reconstruction [N, H, W, 3] with every face [M, H, W, 3] -> [N, M]."""
    def standardised(images: np.ndarray) -> np.ndarray:
        grey = (images.astype(np.float64) @ LUMA).reshape(len(images), -1)
        grey = grey - grey.mean(1, keepdims=True)
        norm = np.linalg.norm(grey, axis=1, keepdims=True)
        return grey / np.where(norm > 0, norm, 1.0)

    return standardised(recon) @ standardised(faces).T


def rank_of_own(corr: np.ndarray, own: np.ndarray) -> np.ndarray:
    """For each row i, how many faces are at least as close as its own face own[i] (1: the closest). Ties
    count against it, so a constant reconstruction is never "identified"."""
    mine = corr[np.arange(len(corr)), own]
    return (corr >= mine[:, None]).sum(1)


def morph_latents(mu: np.ndarray) -> np.ndarray:
    """Latent means [N, D] -> the morphs of the pairs (i, i + 1) scored by `summary`, [P, MORPH_STEPS, D] with
    P = min(N, MAX_MORPHS): (1 - t) mu_a + t mu_b for t from 0 to 1, as /v1/morph interpolates."""
    n = min(len(mu), MAX_MORPHS) if len(mu) > 1 else 0
    a, b = mu[:n].astype(np.float64), mu[(np.arange(n) + 1) % len(mu)].astype(np.float64)
    t = np.linspace(0.0, 1.0, MORPH_STEPS)[None, :, None]  # [1, steps, 1]
    return ((1.0 - t) * a[:, None] + t * b[:, None]).astype(np.float32)


def nearing_b(frames: np.ndarray) -> np.ndarray:
    """Morphs [P, steps, ...] -> [P] bool: the RMS distance of frame k to the last frame falls strictly with k."""
    flat = frames.reshape(frames.shape[0], frames.shape[1], -1).astype(np.float64)
    to_b = np.sqrt(((flat - flat[:, -1:]) ** 2).mean(2))  # [P, steps]
    return np.all(np.diff(to_b, axis=1) < 0, axis=1)


def decoded_summary(faces: np.ndarray, mu: np.ndarray, decode) -> dict:
    """`summary` of faces [N, H, W, 3] in [0, 1] from their latent means mu [N, D], with `decode` (latents [M, D] ->
    images [M, H, W, 3] in [0, 1]) run on mu and on the morph_latents: one home for every evaluation's decoding."""
    z = morph_latents(mu)  # [P, steps, D]
    morphs = decode(z.reshape(-1, z.shape[-1])).reshape(*z.shape[:2], *faces.shape[1:]) if len(z) else None
    return summary(faces, decode(mu), morphs)


def summary(faces: np.ndarray, recon: np.ndarray, morphs: np.ndarray | None = None) -> dict:
    """faces and their reconstructions decode(mu), [N, H, W, 3] in [0, 1] -> the figures above, with the mean
    face scored the same way beside them (mean_face_*). morphs: the decoded morph_latents, [P, steps, H, W, 3]."""
    n = len(faces)
    corr = correlations(recon, faces)
    ranks = rank_of_own(corr, np.arange(n))
    # Morph ends: the pairs (i, i + 1); frame 0 is decode(mu_a) and the last frame decode(mu_b), i.e. the
    # reconstructions of a and of b.
    pairs = np.arange(n)
    ends = (ranks[pairs] == 1) & (ranks[(pairs + 1) % n] == 1)
    out = {"faces": int(n), "psnr_db": float(np.mean(psnr(faces, recon))), "ssim": float(np.mean(ssim(faces, recon))),
           "correlation_own": float(np.mean(np.diag(corr))),
           "correlation_others": float((corr.sum() - np.trace(corr)) / max(n * (n - 1), 1)),
           "identified_top1": float(np.mean(ranks <= 1)), "identified_top5": float(np.mean(ranks <= 5)),
           "morph_ends_identified": float(np.mean(ends)) if n > 1 else float("nan"), "chance_top1": 1.0 / max(n, 1)}
    if morphs is not None and len(morphs):
        out["morphs"] = int(len(morphs))
        out["morph_nearing_b"] = float(np.mean(nearing_b(morphs)))
    flat = np.broadcast_to(faces.astype(np.float64).mean(0), faces.shape)
    out["mean_face_psnr_db"] = float(np.mean(psnr(faces, flat)))
    out["mean_face_ssim"] = float(np.mean(ssim(faces, flat)))
    return out
