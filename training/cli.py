"""`python -m training`: train the CNN and the DB-VAE, export them to ONNX with a manifest, evaluate.
This module is the command line (flags from TrainConfig, errors as exit codes); training/pipeline.py runs it.

    python -m training                                   # built-in data set, a few minutes on a CPU
    python -m training --source h5 --h5 train_face.h5    # the MIT 6.S191 lab file
    python -m training --source folders --faces img_align_celeba/ --non-faces imagenet/
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch.distributed

from training import distributed
from training.config import TrainConfig, config_parser
from training.data.h5 import DataError
from training.pipeline import run

log = logging.getLogger("training")


def build_parser() -> argparse.ArgumentParser:
    return config_parser(TrainConfig, "python -m training", __doc__)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO if distributed.from_environment().is_main else logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        cfg = TrainConfig(**vars(args))
        run(cfg)
    except (DataError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (torch.distributed.DistError, RuntimeError) as exc:
        if not distributed.from_environment().enabled:
            raise
        # Under torchrun a peer that died or a collective that timed out surfaces here, on every rank.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"error: distributed training stopped: another process failed or timed out ({first}); "
              f"rerun with --resume to continue from the last checkpoint", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("interrupted: the last completed epoch is in the checkpoint (--resume continues)", file=sys.stderr)
        return 130
    return 0
