"""The training set held on the training device, so that on a GPU the host never touches a batch (issue 19).

The loader path (train.batches_of: an h5 read per image, then a copy to the device) costs ~9.5 ms per batch of
256 on an H200 host, more than the DB-VAE's step (bench/results/gpu_check_training_b256.json). Here instead:

* the whole file is streamed once, in chunks of contiguous rows through pinned memory, into one uint8
  [N, 64, 64, 3] tensor on the device (the MIT file is about 1.6 GB at 64x64x3);
* each epoch's batch indices are drawn there, faces from the sampling probabilities (torch.multinomial) and
  non-faces uniformly, by a generator seeded from (seed, model, epoch), so a resumed run draws what the
  uninterrupted one would;
* a batch is one gather from that tensor, converted to float on the device (train.as_input), then augmented
  there as before (training/augment.py is batched tensor code);
* the DB-VAE's resampling pass encodes the faces from it.

The draws follow the same distribution as train.epoch_batches (half faces by p, half non-faces uniform, the
same global batches on every rank, each rank keeping its 1/world of each half) from another random stream, so
the two paths train on different but equally likely batches. `--data-on-device auto` uses this on CUDA when the
set fits in a quarter of the free device memory, and the loader path everywhere else; `on` forces it (also on
the CPU, which is how the tests run it).
"""

from __future__ import annotations

import numpy as np
import torch

from training.data.h5 import H5Source
from training.distributed import Dist

CHUNK = 8192  # rows per read: 8192 x 12 KiB = 96 MiB of pinned memory at a time
SHARE_OF_FREE = 0.25  # auto: at most this share of the device's free memory


def fits(source: H5Source, device: torch.device) -> bool:
    """Whether `source`'s images fit in SHARE_OF_FREE of `device`'s free memory (CUDA only)."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return len(source) * 64 * 64 * 3 <= SHARE_OF_FREE * free


def use_device_data(mode: str, source: H5Source, device: torch.device) -> bool:
    """--data-on-device: on | off | auto (on for CUDA when the set fits)."""
    return mode == "on" or (mode == "auto" and fits(source, device))


class DeviceData:
    """images: uint8 [N, H, W, 3] RGB on the device, row i the source's image i; labels: int64 [N] there."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels
        self.device = images.device

    @classmethod
    def load(cls, source: H5Source, device: torch.device, chunk: int = CHUNK) -> DeviceData:
        """The whole source, streamed in contiguous chunks (pinned on the host when the device is a GPU)."""
        n = len(source)
        images = torch.empty((n, 64, 64, 3), dtype=torch.uint8, device=device)
        pin = device.type == "cuda"
        for start in range(0, n, chunk):
            part = torch.from_numpy(source.read_range(start, min(n, start + chunk)))
            images[start:start + len(part)].copy_(part.pin_memory() if pin else part, non_blocking=pin)
        if pin:
            torch.cuda.synchronize(device)  # the pinned chunks must outlive their copies
        return cls(images, torch.from_numpy(source.labels).to(device))

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Source indices [B] (on the device) -> (uint8 [B, H, W, 3], labels [B]), as batches_of gives them."""
        return self.images[indices], self.labels[indices]

    def chunks(self, indices: np.ndarray, batch: int):
        """uint8 [<=batch, H, W, 3] batches of `indices` in order: the input of train.predict."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64), device=self.device)
        for i in range(0, len(idx), batch):
            yield self.images[idx[i:i + batch]], self.labels[idx[i:i + batch]]


def batch_generator(device: torch.device, seed: int, stream: int, epoch: int) -> torch.Generator:
    """The epoch's batch stream: the same on every rank, and after --resume the same as without it."""
    state = np.random.SeedSequence([seed, stream, epoch]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device=device).manual_seed(int(state[0]) << 32 | int(state[1]))


def draw_batches(gen: torch.Generator, faces: torch.Tensor, non_faces: torch.Tensor, p_faces: torch.Tensor,
                 steps: int, batch: int, world: Dist = Dist()) -> torch.Tensor:
    """train.epoch_batches on the device: source indices [steps, B / world], faces first. faces, non_faces:
    int64 source indices on the device; p_faces [F] the faces' sampling probabilities."""
    half = batch // 2
    pick = torch.multinomial(p_faces.float(), steps * half, replacement=True, generator=gen)
    f = faces[pick].view(steps, half)
    n = non_faces[torch.randint(len(non_faces), (steps, batch - half), generator=gen, device=faces.device)]
    r, w = world.rank, world.world
    return torch.cat([f[:, r::w], n[:, r::w]], dim=1)
