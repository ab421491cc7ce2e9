"""Batch data augmentation on tensors: one affine warp for the whole batch (grid_sample), then photometric
jitter. Vectorised and seeded, so it costs a small fraction of a training step. Training only."""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from training.config import TrainConfig

GREY = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601 luma, as Pillow's convert("L")


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def augment(x: torch.Tensor, cfg: TrainConfig, g: torch.Generator,
            backgrounds: torch.Tensor | None = None) -> torch.Tensor:
    """x: float [N, 3, H, W] in [0, 1] -> augmented copy, same shape and range: geometry, then appearance."""
    return appearance(geometry(x, cfg, g, backgrounds), cfg, g, backgrounds)


def geometry(x: torch.Tensor, cfg: TrainConfig, g: torch.Generator,
             backgrounds: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate, scale, shift and flip: the face as framed, before anything covers or recolours it.

    Zooming out or rotating uncovers area outside the source image. With `backgrounds` ([M, 3, H, W]
    non-face images) that area shows a real scene, so a zoomed-out face sits in a real surrounding the way
    a face does in a photo; both classes are treated alike, so the seam tells nothing. Without them the
    image is mirrored into it."""
    n, dev = x.shape[0], x.device
    # Geometry: rotate, scale, shift and flip as one 2x3 affine matrix per image.
    angle = _uniform(n, -cfg.rotate, cfg.rotate, g, dev) * math.pi / 180
    scale = _uniform(n, cfg.scale_min, cfg.scale_max, g, dev)
    flip = torch.where(torch.rand(n, generator=g, device=dev) < cfg.flip, -1.0, 1.0)
    tx, ty = (_uniform(n, -cfg.shift, cfg.shift, g, dev) * 2 for _ in range(2))  # grid units span 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1),
                         torch.stack([sin * flip, cos, ty], 1)], 1)  # [N, 2, 3]
    return _warp(x, theta, backgrounds, g)


# The light view (light_view): how far a framed face crop is from the training faces' framing. The localiser's
# box is off by up to about a stride and a scale step; the decoder is asked to give back such crops.
LIGHT_ROTATE, LIGHT_SHIFT, LIGHT_SCALE = 5.0, 0.04, (0.93, 1.07)


def light_view(faces: torch.Tensor, cfg: TrainConfig, g: torch.Generator,
               backgrounds: torch.Tensor | None = None) -> torch.Tensor:
    """Faces [M, 3, H, W] framed as a face crop is: flipped with cfg.flip, rotated, moved and scaled a little
    (LIGHT_*), nothing covering or recolouring them. The DB-VAE's reconstruction term trains on this view
    (--vae-view light), so its decoder learns to give back faces like those /v1/reconstruct is sent, and not
    faces zoomed out into a scene at 15 degrees, which the classifier's augmentation makes."""
    light = replace(cfg, rotate=LIGHT_ROTATE, shift=LIGHT_SHIFT, scale_min=LIGHT_SCALE[0], scale_max=LIGHT_SCALE[1])
    return geometry(faces, light, g, backgrounds)


def appearance(x: torch.Tensor, cfg: TrainConfig, g: torch.Generator,
               backgrounds: torch.Tensor | None = None) -> torch.Tensor:
    """Occluders cut from real scenes, then per-channel gain (colour), grey, contrast around the mean,
    brightness and pixel noise."""
    n, dev = x.shape[0], x.device
    if backgrounds is not None and len(backgrounds) and cfg.occlude > 0:
        x = _occlude(x, backgrounds, cfg.occlude, g)
    gains = 1 + (torch.rand(n, 3, 1, 1, generator=g, device=dev) * 2 - 1) * cfg.colour
    x = x * gains
    luma = (x * GREY.to(dev).view(1, 3, 1, 1)).sum(1, keepdim=True)  # [N, 1, H, W]
    grey = (torch.rand(n, 1, 1, 1, generator=g, device=dev) < cfg.grey).to(x.dtype)
    x = grey * luma.expand_as(x) + (1 - grey) * x
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=g, device=dev) * 2 - 1) * cfg.contrast
    brightness = (torch.rand(n, 1, 1, 1, generator=g, device=dev) * 2 - 1) * cfg.brightness
    x = (x - mean) * contrast + mean + brightness
    if cfg.noise > 0:
        x = x + torch.randn(x.shape, generator=g, device=dev) * cfg.noise
    return x.clamp(0, 1)


def _warp(x: torch.Tensor, theta: torch.Tensor, backgrounds: torch.Tensor | None, g: torch.Generator) -> torch.Tensor:
    """x [N, 3, H, W] through the affine maps theta [N, 2, 3]; uncovered area shows a real scene from
    `backgrounds` when given, else the image mirrored."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    if backgrounds is None or len(backgrounds) == 0:
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    warped = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    inside = (grid.abs() <= 1).all(-1).unsqueeze(1)  # [N, 1, H, W]: where the source image lands
    pick = torch.randint(len(backgrounds), (len(x),), generator=g, device=x.device)
    return torch.where(inside, warped, backgrounds[pick])


def misframe(faces: torch.Tensor, g: torch.Generator, backgrounds: torch.Tensor | None = None) -> torch.Tensor:
    """Faces [M, 3, H, W] as a scan meets them in the windows around the right one: shifted by 40-70% of the
    window in a random direction, zoomed out to 25-40% (a small face in a large window) or in to 2.2-3x (a part
    of a face). Trained as non-faces, they teach that only a well-framed window is a face."""
    m, dev = faces.shape[0], faces.device
    kind = torch.randint(3, (m,), generator=g, device=dev)  # 0 off-centre, 1 too small, 2 too large
    scale = torch.where(kind == 1, _uniform(m, 0.25, 0.4, g, dev),
                        torch.where(kind == 2, _uniform(m, 2.2, 3.0, g, dev), _uniform(m, 0.9, 1.1, g, dev)))
    direction = _uniform(m, 0, 2 * math.pi, g, dev)
    reach = torch.where(kind == 0, _uniform(m, 0.4, 0.7, g, dev), _uniform(m, 0.0, 0.1, g, dev)) * 2  # grid units
    tx, ty = reach * torch.cos(direction), reach * torch.sin(direction)
    zero = torch.zeros(m, device=dev)
    theta = torch.stack([torch.stack([1 / scale, zero, tx], 1), torch.stack([zero, 1 / scale, ty], 1)], 1)
    return _warp(faces, theta, backgrounds, g)


def placed(faces: torch.Tensor, side: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, flip: torch.Tensor,
           backgrounds: torch.Tensor | None, g: torch.Generator) -> torch.Tensor:
    """Faces [M, 3, H, W] as a window meets them that is not framed on them: each face scaled to `side` [M] of
    the window (as a fraction), its centre moved by dx, dy [M] window sides from the window's centre, mirrored
    where flip [M] is -1; the rest of the window shows a real scene from `backgrounds` (training/box_regression.py)."""
    zero = torch.zeros_like(side)
    # affine_grid maps output to input coordinates (both span 2): the face's centre lands on 2 * (dx, dy).
    theta = torch.stack([torch.stack([flip / side, zero, -flip * 2 * dx / side], 1),
                         torch.stack([zero, 1 / side, -2 * dy / side], 1)], 1)
    return _warp(faces, theta, backgrounds, g)


def _occlude(x: torch.Tensor, backgrounds: torch.Tensor, p: float, g: torch.Generator) -> torch.Tensor:
    """With probability p, cover a random rectangle (5-25% of the area) with the same place of a real
    scene, as glasses, a hand or a hat brim would: no single region of a face may decide the answer."""
    n, dev = x.shape[0], x.device
    h, w = x.shape[-2:]
    area = _uniform(n, 0.05, 0.25, g, dev)
    aspect = torch.exp(_uniform(n, -math.log(2), math.log(2), g, dev))
    rh, rw = (area * aspect).sqrt() * h, (area / aspect).sqrt() * w  # [N] each
    y0 = torch.rand(n, generator=g, device=dev) * (h - rh).clamp(min=0)
    x0 = torch.rand(n, generator=g, device=dev) * (w - rw).clamp(min=0)
    ys = torch.arange(h, device=dev).view(1, h, 1)
    xs = torch.arange(w, device=dev).view(1, 1, w)
    box = ((ys >= y0.view(-1, 1, 1)) & (ys < (y0 + rh).view(-1, 1, 1))
           & (xs >= x0.view(-1, 1, 1)) & (xs < (x0 + rw).view(-1, 1, 1)))  # [N, H, W]
    box &= (torch.rand(n, generator=g, device=dev) < p).view(-1, 1, 1)
    pick = torch.randint(len(backgrounds), (n,), generator=g, device=dev)
    return torch.where(box.unsqueeze(1), backgrounds[pick], x)
