"""Training configuration: one typed, commented set of defaults; every field is a CLI flag (see cli.py)."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, asdict, dataclass, field, fields

from training.data.builtin import BUILTIN_FACES, EXTRA_NON_FACES
from training.environment import environment
from training.model import ModelConfig
from training.step_options import parse as parse_step_options


def opt(default, help: str):
    """A config field whose help text is shown by --help."""
    return field(default=default, metadata={"help": help})


def config_parser(cls: type, prog: str, doc: str | None) -> argparse.ArgumentParser:
    """One flag per field of the config dataclass `cls` (--no-X for booleans), its default and help shown."""
    ap = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        # argparse %-formats help texts: a literal % (as in "5-25%") must be doubled or --help crashes.
        help_ = f"{f.metadata.get('help', '')} (default: {default})".replace("%", "%%")
        if isinstance(default, bool):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_)
        else:
            ap.add_argument(flag, type=type(default), default=default, help=help_)
    return ap


@dataclass
class TrainConfig:
    # --- data -------------------------------------------------------------------------------
    source: str = opt("builtin", "builtin | h5 | folders")
    h5: str = opt("", "--source h5: path to the MIT 6.S191 train_face.h5 (or any file in that layout)")
    faces: str = opt("", "--source folders: directory of face images (sub-folders become groups)")
    non_faces: str = opt("", "--source folders: directory of non-face images")
    cache_dir: str = opt(str(environment().cache), "built-in set and converted folders are cached here (FACEDET_CACHE)")
    builtin_non_faces: int = opt(EXTRA_NON_FACES, "extra natural-image crops added to the built-in set's 100 patches")
    builtin_faces: str = opt("lfw", "the built-in set's faces: lfw (the LFW subset's 100) | all (+ 747 faces of photos "
                                    "in two PyPI wheels, training/data/packaged.py; measured: worse localisation, and "
                                    "reconstructions below the default's, whose decoder tuning uses those faces; see "
                                    "the README)")
    val_fraction: float = opt(0.2, "held-out, stratified by label, seeded")
    seed: int = opt(0, "seeds the split, sampling, augmentation and weights")

    # --- models -----------------------------------------------------------------------------
    models: str = opt("cnn,dbvae", "which to train, comma separated")
    latent_dim: int = opt(ModelConfig.latent_dim, "DB-VAE latent dimensions D")
    front_end: str = opt("auto", "fixed first stage inside the graph: none | grey | lowpass | grey-lowpass; "
                              "auto: grey-lowpass for the grey, 25-pixel built-in set, none otherwise")
    decoder: str = opt("deconv", "DB-VAE decoder blocks: deconv (transposed conv, the lab's) | upsample (nearest x2 + "
                                 "3x3 conv: no gain measured on the built-in faces, 2x the decoder time)")
    decoder_filters: str = opt("", "DB-VAE decoder channels per up-sampling block, comma separated (4 -> 64 px); "
                                   "empty: the encoder's filters mirrored")
    decoder_colour: str = opt("auto", "DB-VAE output: rgb | grey (one channel given out as R = G = B); auto: grey "
                                      "when the front end is grey, as the encoder then never sees colour")
    dropout: float = opt(0.3, "dropout before the dense head: 80 built-in faces are easy to memorise")

    # --- optimisation -----------------------------------------------------------------------
    epochs: int = opt(30, "training epochs per model")
    steps_per_epoch: int = opt(0, "0: one pass over the training images' count per epoch")
    batch_size: int = opt(32, "half faces (resampled for the DB-VAE), half non-faces (uniform)")
    lr: float = opt(5e-4, "Adam learning rate")
    lr_schedule: str = opt("cosine", "cosine (decays to 0 by the last epoch, so the exported model is a settled "
                                     "one) | constant")
    weight_decay: float = opt(1e-4, "Adam L2 weight decay")
    kl_weight: float = opt(2e-5, "c in  c * KL + L1 (the lab's 5e-4 kept the latent code to about 15 nats on the "
                                 "built-in faces: every reconstruction near the mean face)")
    vae_weight: float = opt(30.0, "w in  BCE + w * [face] * (c * KL + L1): the reconstruction's pull on the shared "
                                  "encoder against the classifier's, which wants features blind to who a face is "
                                  "(1: the paper's loss)")
    kl_warmup: float = opt(0.2, "share of all training steps over which c rises linearly from 0 (0: constant c)")
    workers: int = opt(0, "DataLoader worker processes reading images; 0 reads in the training process")
    device: str = opt("auto", "auto | cpu | cuda (under torchrun: the local rank's GPU)")
    data_on_device: str = opt("auto", "hold the training set on the device, batches drawn and cut there "
                                      "(training/device_data.py): on | off | auto (on for CUDA when the set fits in "
                                      "a quarter of the free device memory)")
    step_options: str = opt("", "how the step is computed, for a GPU (training/step_options.py), comma separated: "
                                "fused_adam, channels_last, bf16, compile | cuda_graphs; empty: plain float32")
    dist_timeout: float = opt(1800.0, "seconds a collective may wait under torchrun before the run fails "
                                      "(covers rank 0 converting a folder source while the others wait)")

    # --- adaptive resampling (DB-VAE) -------------------------------------------------------
    hist_bins: int = opt(10, "histogram bins per latent dimension")
    smoothing: float = opt(1e-3, "alpha added to the histogram density before inverting it")
    resample_batch: int = opt(256, "batch size of the encoding pass over all training faces")

    # --- augmentation (training only) -------------------------------------------------------
    augment: bool = opt(True, "apply the augmentation below (--no-augment to turn off)")
    flip: float = opt(0.5, "probability of a horizontal flip")
    rotate: float = opt(15.0, "max degrees")
    shift: float = opt(0.08, "max fraction of the image size")
    scale_min: float = opt(0.6, "smallest zoom; <1 zooms out into a real scene, so a face need not fill the frame")
    scale_max: float = opt(1.3, "largest zoom (>1 crops into the face)")
    brightness: float = opt(0.2, "max additive change")
    contrast: float = opt(0.2, "max relative change")
    colour: float = opt(0.15, "per-channel gain jitter: tints grey images, recolours colour ones")
    grey: float = opt(0.2, "probability of turning an image grey (both classes alike)")
    occlude: float = opt(0.3, "probability of covering a random 5-25% rectangle with a real scene")
    noise: float = opt(0.03, "standard deviation of additive Gaussian pixel noise")
    recon_target: str = opt("augmented", "what the DB-VAE decoder reconstructs: augmented (the input itself) | "
                                         "clean (the face as framed, without occluders, colour changes and noise)")
    vae_view: str = opt("light", "what the DB-VAE's reconstruction term sees: batch (the classifier's augmented "
                                 "batch, as in the paper) | light (a second view of its faces, only flipped and "
                                 "moved a little, as face crops are framed; the batch keeps the BCE term)")
    tune_steps: int = opt(2000, "decoder tuning after the DB-VAE's training (training/decoder_tuning.py): steps on the "
                                "VAE loss alone for its latent branch and decoder, the face logit frozen; 0: none")
    tune_faces: str = opt("auto", "the decoder tuning's faces: train (the training faces) | packaged (half of each "
                                  "batch from the 747 packaged faces, training/data/packaged.py; --source builtin "
                                  "only); auto: packaged for --source builtin, train otherwise")
    tune_lr: float = opt(2e-3, "the decoder tuning's Adam learning rate (cosine to 0)")
    misframed: float = opt(0.5, "share of each batch's faces added again as non-faces, off-centre, too small or "
                                "too large, so only well-framed windows score high when a photo is scanned")

    # --- training for the scan (the localiser) ---------------------------------------------
    mine_rounds: int = opt(2, "hard-negative mining: after training, the scan graphs' false alarms on the built-in "
                              "face-free scenes join the non-faces and every model trains again, this many times")

    # --- outputs ----------------------------------------------------------------------------
    out_dir: str = opt("models", "ONNX files + manifest.json")
    checkpoint_dir: str = opt("checkpoints", "where <model>.pt checkpoints are written")
    threshold: float = opt(0.5, "decision threshold written to the manifest")
    fairness_resamples: int = opt(1000, "bootstrap resamples behind the fairness card's 95% intervals")
    resume: bool = opt(False, "continue from checkpoint_dir/<model>.pt if present")
    progress: bool = opt(True, "show progress bars (--no-progress to hide)")

    def __post_init__(self):
        if self.source not in ("builtin", "h5", "folders"):
            raise ValueError(f"--source must be builtin, h5 or folders, not {self.source!r}")
        if self.builtin_faces not in BUILTIN_FACES:
            raise ValueError(f"--builtin-faces must be {' or '.join(BUILTIN_FACES)}, not {self.builtin_faces!r}")
        if self.source == "h5" and not self.h5:
            raise ValueError("--source h5 needs --h5 PATH")
        if self.source == "folders" and not (self.faces and self.non_faces):
            raise ValueError("--source folders needs --faces DIR and --non-faces DIR")
        bad = [k for k in self.model_list if k not in ("cnn", "dbvae")]
        if bad or not self.model_list:
            raise ValueError(f"--models takes cnn and/or dbvae, not {self.models!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError("--val-fraction must be between 0 and 1")
        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError("--batch-size must be an even number >= 2 (half faces, half non-faces)")
        for name in ("epochs", "latent_dim", "hist_bins", "resample_batch", "fairness_resamples"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        parse_step_options(self.step_options)
        if self.data_on_device not in ("auto", "on", "off"):
            raise ValueError(f"--data-on-device must be auto, on or off, not {self.data_on_device!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError("--lr-schedule must be cosine or constant")
        if self.recon_target not in ("augmented", "clean"):
            raise ValueError("--recon-target must be augmented or clean")
        if self.decoder_colour not in ("auto", "rgb", "grey"):
            raise ValueError("--decoder-colour must be auto, rgb or grey")
        try:
            self.model_config()
        except ValueError as exc:
            raise ValueError(f"bad model settings: {exc}") from exc
        if self.vae_view not in ("batch", "light"):
            raise ValueError("--vae-view must be batch or light")
        if self.tune_steps < 0:
            raise ValueError("--tune-steps must be >= 0")
        if self.tune_faces not in ("auto", "train", "packaged"):
            raise ValueError(f"--tune-faces must be auto, train or packaged, not {self.tune_faces!r}")
        if self.tune_faces == "packaged" and self.source != "builtin":
            raise ValueError("--tune-faces packaged is for --source builtin: the packaged faces are cut in its "
                             "25-pixel grey look")
        if self.mine_rounds < 0:
            raise ValueError("--mine-rounds must be >= 0")
        if self.vae_weight <= 0:
            raise ValueError("--vae-weight must be > 0")
        if not 0 <= self.kl_warmup <= 1:
            raise ValueError("--kl-warmup must be between 0 and 1 (a share of all training steps)")
        if not 0 <= self.misframed <= 1:
            raise ValueError("--misframed must be between 0 and 1")
        if not 0 < self.threshold < 1:
            raise ValueError("--threshold must be between 0 and 1")

    @property
    def model_front_end(self) -> str:
        if self.front_end == "auto":
            return "grey-lowpass" if self.source == "builtin" else "none"
        return self.front_end

    @property
    def model_list(self) -> list[str]:
        return [m.strip() for m in self.models.split(",") if m.strip()]

    def model_config(self) -> ModelConfig:
        """The network `python -m training` trains, as this config describes it."""
        colour = self.decoder_colour
        if colour == "auto":
            colour = "grey" if "grey" in self.model_front_end else "rgb"
        try:
            filters = tuple(int(c) for c in self.decoder_filters.split(",") if c.strip())
        except ValueError:
            raise ValueError(f"--decoder-filters takes comma-separated integers, not {self.decoder_filters!r}") from None
        return ModelConfig(latent_dim=self.latent_dim, dropout=self.dropout, front_end=self.model_front_end,
                           decoder=self.decoder, decoder_filters=filters,
                           decoder_channels=1 if colour == "grey" else 3)

    def to_dict(self) -> dict:
        return asdict(self)
