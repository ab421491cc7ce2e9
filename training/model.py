"""The networks: a standard CNN face classifier and the DB-VAE (Amini et al., 2019).

Read top to bottom: building blocks, then the config, then the two models, then the losses.
All images are float32 RGB NCHW [N, 3, 64, 64] in [0, 1].
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from training.contract import IMAGE_SIZE

# ---------------------------------------------------------------------------------------------
# Blocks


class ConvBlock(nn.Sequential):
    """conv -> batch norm -> ReLU; stride 2 halves the spatial size."""

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride=2, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class DeconvBlock(nn.Sequential):
    """Transposed conv (x2 upsampling) -> batch norm -> ReLU, mirroring a ConvBlock."""

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__(
            nn.ConvTranspose2d(c_in, c_out, kernel, stride=2, padding=kernel // 2,
                               output_padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class UpBlock(nn.Sequential):
    """Nearest x2 up-sampling -> 3x3 conv -> batch norm -> ReLU: the alternative to DeconvBlock (--decoder upsample).
    A stride-2 transposed conv whose kernel does not divide by its stride can paint the checkerboard of Odena et
    al. (Distill 2016); up-sampling first and then convolving cannot."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )


class FrontEnd(nn.Module):
    """Optional fixed (weight-free) first stage, exported inside the graph so serving needs no change.

    "grey": RGB -> luma replicated to 3 channels, so colour carries no signal (the built-in faces are grey).
    "lowpass": 2x average-pool then bilinear up-sampling, so a sharp photo looks like the soft, up-sampled
    25-pixel crops of the built-in set instead of something the model never saw.
    With replicate=False a grey front end hands on the single luma channel (see export.fold_front_end).
    """

    def __init__(self, kind: str, replicate: bool = True):
        super().__init__()
        self.grey = "grey" in kind
        self.lowpass = "lowpass" in kind
        self.replicate = replicate
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        self.register_buffer("luma", luma, persistent=False)
        self.register_buffer("luma_pool", luma.expand(1, 3, 2, 2) / 4, persistent=False)  # luma of a 2x2 mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.grey:
            # Luma and the low-pass's 2x2 mean are both linear: one strided conv does both. [N, 1, H/2, W/2]
            x = F.conv2d(x, self.luma_pool, stride=2) if self.lowpass else F.conv2d(x, self.luma)
        elif self.lowpass:
            x = F.avg_pool2d(x, 2)  # [N, 3, H/2, W/2]
        if self.lowpass:
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)  # [N, C, H, W]
        if self.grey and self.replicate:
            x = x.expand(-1, 3, -1, -1)  # [N, 3, H, W], R = G = B
        return x


# ---------------------------------------------------------------------------------------------
# Config


@dataclass
class ModelConfig:
    image_size: int = IMAGE_SIZE
    filters: tuple[int, ...] = (12, 24, 48, 72)  # one conv block each, stride 2: 64 -> 4
    kernels: tuple[int, ...] = (5, 5, 3, 3)
    hidden: int = 512  # dense layer before the head
    latent_dim: int = 100  # DB-VAE only
    dropout: float = 0.0  # before the dense head; 0 keeps the architecture of the lab
    front_end: str = "none"  # none | grey | lowpass | grey-lowpass (see FrontEnd)
    decoder: str = "deconv"  # DB-VAE only: deconv (DeconvBlock, the lab's) | upsample (UpBlock)
    decoder_filters: tuple[int, ...] = ()  # DB-VAE only, one up-sampling block each: 4 -> 64; () mirrors filters
    decoder_channels: int = 3  # DB-VAE only: 3 (RGB) | 1 (grey, given out as R = G = B)
    # DB-VAE only: mu and log sigma^2 from their own dense layer on the conv features (DBVAE.latent), not from the
    # classifier's head; set by the decoder tuning (training/decoder_tuning.py), which leaves the face logit as it is.
    latent_branch: bool = False

    def __post_init__(self):
        self.filters, self.kernels = tuple(self.filters), tuple(self.kernels)
        self.decoder_filters = tuple(self.decoder_filters) or tuple(reversed(self.filters))
        if len(self.filters) != len(self.kernels):
            raise ValueError("filters and kernels must have the same length")
        if self.front_end not in ("none", "grey", "lowpass", "grey-lowpass"):
            raise ValueError(f"front_end must be none, grey, lowpass or grey-lowpass, not {self.front_end!r}")
        if self.decoder not in ("upsample", "deconv"):
            raise ValueError(f"decoder must be upsample or deconv, not {self.decoder!r}")
        if len(self.decoder_filters) != len(self.filters):
            raise ValueError("decoder_filters needs one entry per encoder block (the same 2^n up-sampling)")
        if self.decoder_channels not in (1, 3):
            raise ValueError(f"decoder_channels must be 1 (grey) or 3 (RGB), not {self.decoder_channels}")
        if self.image_size % (2 ** len(self.filters)):
            raise ValueError(f"image_size {self.image_size} is not divisible by 2^{len(self.filters)}")

    @property
    def feature_size(self) -> int:
        return self.image_size // 2 ** len(self.filters)  # 4 for 64 px and 4 blocks

    def to_dict(self) -> dict:
        return asdict(self)


def make_encoder(cfg: ModelConfig, n_out: int) -> nn.Sequential:
    """Conv blocks -> flatten -> dense -> n_out values."""
    blocks, c_in = [], 3
    for c_out, k in zip(cfg.filters, cfg.kernels):
        blocks.append(ConvBlock(c_in, c_out, k))
        c_in = c_out
    flat = c_in * cfg.feature_size**2  # 72 * 4 * 4 = 1152
    return nn.Sequential(
        FrontEnd(cfg.front_end),
        *blocks,
        nn.Flatten(),
        nn.Dropout(cfg.dropout),
        nn.Linear(flat, cfg.hidden),
        nn.ReLU(inplace=True),
        nn.Linear(cfg.hidden, n_out),
    )


# ---------------------------------------------------------------------------------------------
# Models


class FaceCNN(nn.Module):
    """Standard CNN classifier: image [N,3,64,64] -> face logit [N]."""

    def __init__(self, cfg: ModelConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ModelConfig()
        self.net = make_encoder(cfg, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image).squeeze(1)  # [N, 1] -> [N]


class DBVAE(nn.Module):
    """Debiasing VAE: the encoder emits a face logit z0 plus a latent Gaussian (mu, log sigma^2)."""

    def __init__(self, cfg: ModelConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or ModelConfig()
        d = cfg.latent_dim
        self.encoder = make_encoder(cfg, 1 + 2 * d)
        chans = list(cfg.decoder_filters)  # e.g. 72, 48, 24, 12: the encoder's, mirrored
        s = cfg.feature_size
        self.decoder_in = nn.Sequential(nn.Linear(d, chans[0] * s * s), nn.ReLU(inplace=True))
        ups = []
        if cfg.decoder == "upsample":
            for c_in, c_out in zip(chans, chans[1:]):
                ups.append(UpBlock(c_in, c_out))
            ups += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(chans[-1], cfg.decoder_channels, 3, padding=1)]
        else:
            kernels = list(reversed(cfg.kernels))
            for c_in, c_out, k in zip(chans, chans[1:], kernels):
                ups.append(DeconvBlock(c_in, c_out, k))
            ups.append(nn.ConvTranspose2d(chans[-1], cfg.decoder_channels, kernels[-1], stride=2,
                                          padding=kernels[-1] // 2, output_padding=1))
        self.decoder_conv = nn.Sequential(*ups)
        # The latent branch (cfg.latent_branch): conv features [N, 1152] -> hidden -> (mu, log sigma^2) [N, 2D].
        self.latent = nn.Sequential(nn.Linear(self.encoder[-3].in_features, cfg.hidden), nn.ReLU(inplace=True),
                                    nn.Linear(cfg.hidden, 2 * d)) if cfg.latent_branch else None

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        d = self.cfg.latent_dim
        if self.latent is None:
            out = self.encoder(image)  # [N, 1 + 2D]
            return out[:, 0], out[:, 1 : 1 + d], out[:, 1 + d :]  # logit [N], mu [N, D], logvar [N, D]
        features = self.encoder[:-3](image)  # [N, 1152]: front end, conv blocks, flatten, dropout
        logit = self.encoder[-3:](features)[:, 0]  # [N]: the classifier's head, as without the branch
        out = self.latent(features)  # [N, 2D]
        return logit, out[:, :d], out[:, d:]

    def branch_latent(self) -> DBVAE:
        """Give mu and log sigma^2 their own dense layers (cfg.latent_branch), started as copies of the shared
        head's, so the model computes exactly what it did; from then on they can train without moving the logit."""
        if self.latent is not None:
            return self
        hidden, head, d = self.encoder[-3], self.encoder[-1], self.cfg.latent_dim
        self.cfg = replace(self.cfg, latent_branch=True)
        self.latent = nn.Sequential(copy.deepcopy(hidden), nn.ReLU(inplace=True), nn.Linear(head.in_features, 2 * d))
        with torch.no_grad():
            self.latent[2].weight.copy_(head.weight[1:])
            self.latent[2].bias.copy_(head.bias[1:])
        return self.to(head.weight.device)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        # z = mu + sigma * eps with sigma = exp(1/2 log sigma^2): the same sigma the KL term uses.
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        c, s = self.cfg.decoder_filters[0], self.cfg.feature_size
        h = self.decoder_in(z).view(-1, c, s, s)  # [N, 72, 4, 4]
        out = torch.sigmoid(self.decoder_conv(h))  # [N, C, 64, 64] in [0, 1], C = decoder_channels
        return out.expand(-1, 3, -1, -1)  # [N, 3, 64, 64]: a grey decoder's one channel as R = G = B

    def forward(self, image: torch.Tensor):
        logit, mu, logvar = self.encode(image)
        z = self.reparameterize(mu, logvar)
        return logit, mu, logvar, self.decode(z)


class EncoderGraph(nn.Module):
    """Export view of the DB-VAE encoder: image -> (logit, mu, logvar)."""

    def __init__(self, model: DBVAE):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        return self.model.encode(image)


class DecoderGraph(nn.Module):
    """Export view of the DB-VAE decoder: z -> image."""

    def __init__(self, model: DBVAE):
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z)


def build_model(kind: str, cfg: ModelConfig) -> nn.Module:
    if kind == "cnn":
        return FaceCNN(cfg)
    if kind == "dbvae":
        return DBVAE(cfg)
    raise ValueError(f"unknown model kind {kind!r} (expected 'cnn' or 'dbvae')")


# ---------------------------------------------------------------------------------------------
# Losses


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per sample [N]: 1/2 * sum_j (sigma_j^2 + mu_j^2 - 1 - log sigma_j^2)
    (Kingma & Welling 2014, appendix B; Amini et al. 2019, eq. 2)."""
    return 0.5 * torch.sum(logvar.exp() + mu.pow(2) - 1.0 - logvar, dim=1)


def reconstruction_loss(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """L1 reconstruction per sample [N]: mean over pixels of |x - x_hat|."""
    return (x - x_hat).abs().flatten(1).mean(dim=1)


def dbvae_loss(x, y, logit, mu, logvar, x_hat, *, kl_weight: float, vae_only: int = 0,
               vae_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """DB-VAE loss (Amini et al. 2019, eq. 4): mean over the batch of
    BCE(z0, y) + w * 1[y = face] * (c * KL + L1), w = vae_weight (1 in the paper). y is [N] in {0, 1}; a [N, 1] label is flattened so it
    cannot broadcast against the per-sample [N] terms and silently break the face-only mask.

    vae_only: the last rows are a second view of the batch's faces for the VAE term alone. Then the first
    N - vae_only rows carry the BCE term only, those rows the VAE term only, and the mean is over the first
    N - vae_only rows: the same sum as eq. 4, with each face's VAE term taken on its second view."""
    y = y.reshape(-1).to(logit.dtype)  # [N]
    if y.shape != logit.shape:
        raise ValueError(f"labels {tuple(y.shape)} do not match logits {tuple(logit.shape)}")
    n = len(y) - vae_only  # the classifier's rows
    if vae_only and not bool((y[n:] == 1).all()):
        raise ValueError("the vae_only rows must all be faces")
    bce = F.binary_cross_entropy_with_logits(logit[:n], y[:n], reduction="none")  # [n]
    kl = kl_loss(mu, logvar)  # [N]
    recon = reconstruction_loss(x, x_hat)  # [N]
    vae = vae_weight * (kl_weight * kl + recon)  # [N]
    vae_rows = torch.cat([y[:n] * (vae_only == 0), y[n:]])  # [N]: which rows carry the VAE term
    per_sample = F.pad(bce, (0, vae_only)) + vae_rows * vae  # [N]
    faces = vae_rows.sum().clamp(min=1.0)
    return {
        "loss": per_sample.sum() / max(n, 1),
        "bce": bce.mean(),
        "kl": (vae_rows * kl).sum() / faces,  # reported over the rows it is trained on
        "recon": (vae_rows * recon).sum() / faces,
        "per_sample": per_sample,
    }


def cnn_loss(y, logit) -> dict[str, torch.Tensor]:
    y = y.reshape(-1).to(logit.dtype)
    if y.shape != logit.shape:
        raise ValueError(f"labels {tuple(y.shape)} do not match logits {tuple(logit.shape)}")
    bce = F.binary_cross_entropy_with_logits(logit, y)
    return {"loss": bce, "bce": bce}
