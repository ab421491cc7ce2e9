"""`python -m training.reexport`: export the trained models' graphs again from their checkpoints, without
training again, and rewrite the manifest: for a change in how the graphs are exported (a new graph, a rewrite),
not in what the models learnt. The weights come from `checkpoints/<model>.pt` (for the DB-VAE the tuned model
that `python -m training` exported), every graph passes the same parity checks as in training, and the
manifest keeps its data, training and evaluation records and its "created" time (when they were measured), with
the localiser entry, the level scans (built again from the new fast scans), the box heads (fitted again on the new
features) and the graphs' hashes and versions written anew.

    python -m training.reexport                            # checkpoints/ -> models/
    python -m training.reexport --checkpoints DIR --models DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.box_regression import refit_entries
from training.checkpoint import load_checkpoint
from training.data.h5 import DataError
from training.environment import environment
from training.export import EXPORTERS, ParityError
from training.level_scan import add_level_scans
from training.localiser import LocaliserConfig
from training.manifest import load_manifest, write_manifest

# What an export writes into a manifest entry; everything else in the entry (threshold, metrics, fairness) stays.
# The box head is fitted on the fast scan's features, so it is fitted again on the new graphs' (from the
# manifest's own training data and split, training/box_regression.py).
# So is the level scan, built from the fast scan's graph (training/level_scan.py).
EXPORTED = ("graphs", "parity_max_abs_error", "output_colour", "fast_scan", "version", "box_head", "level_scan")


def reexport(checkpoints: Path, models_dir: Path, cache_dir: str) -> dict:
    """Every model of the manifest in `models_dir`, exported again from `checkpoints` -> the new manifest."""
    manifest = load_manifest(models_dir)
    entries = {}
    for kind, entry in manifest["models"].items():
        path = checkpoints / f"{kind}.pt"
        if not path.is_file():
            raise DataError(f"no checkpoint {path} for the manifest's {kind!r} model: train first (python -m training)")
        model, _ = load_checkpoint(path)
        kept = {k: v for k, v in entry.items() if k not in EXPORTED}
        entries[kind] = {**kept, **EXPORTERS[kind](model, models_dir)}
    localiser = LocaliserConfig()
    add_level_scans(models_dir, entries, localiser.scan_threshold, localiser.fast_scan_margin)
    refit_entries(models_dir, entries, manifest["data"], cache_dir)
    return write_manifest(models_dir, entries, manifest["latent_dim"], manifest["data"], manifest["training"],
                          localiser.to_dict(), created=manifest.get("created"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.reexport", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="where training saved <model>.pt")
    ap.add_argument("--models", type=Path, default=Path("models"), help="the models directory and its manifest")
    ap.add_argument("--cache-dir", default=str(environment().cache),
                    help="where the built-in training set the box heads fit on is cached or rebuilt (default: "
                         "FACEDET_CACHE)")
    args = ap.parse_args(argv)
    try:
        manifest = reexport(args.checkpoints, args.models, args.cache_dir)
    except (DataError, ParityError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(", ".join(f"{k} {e['version']}" for k, e in manifest["models"].items()) + f" written to {args.models}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
