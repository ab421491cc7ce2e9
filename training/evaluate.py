"""`python -m training.evaluate`: evaluate the exported ONNX models (the files the service serves) on any source.

    python -m training.evaluate --models-dir models                       # the held-out split
    python -m training.evaluate --faces ppb/                              # the fairness card of a face set
    python -m training.evaluate --faces ppb/ --non-faces neg/             # ... and every metric
    python -m training.evaluate --faces faces/ --groups groups.csv        # groups from a path,group CSV
    python -m training.evaluate --photos photos/ --boxes boxes.csv       # finding faces in photos

Every evaluation of faces writes the fairness card of every model on the same faces (training/fairness.py):
recall and mean face probability per group, when the face folder has group sub-folders (e.g. LF/ LM/ DF/ DM/) or
--groups names them, and per decile of latent rarity under the DB-VAE, always; with seeded bootstrap intervals,
the largest difference and the smallest ratio between bins. The card goes into the JSON result, a Markdown
card (--card) and a chart with the intervals as error bars (--chart).
With --photos and --boxes (file,x,y,width,height,difficult), each model's localiser runs on the photos:
precision, recall and average precision at IoU >= 0.5, false alarms per photo, and a sheet of every photo
with the true and the found boxes (eval_photos_<model>.png).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from training.data.h5 import DataError
from training.data.sources import manifest_split, open_source, stratified_split
from training.environment import environment
from training.evaluation import evaluate_models, evaluate_photos, read_boxes
from training.fairness import CardConfig, CardInputs
from training.manifest import load_manifest
from training.reporting import card_markdown, fairness_chart, format_table, photo_sheet

log = logging.getLogger("training.evaluate")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", default="models", help="directory with the ONNX files and manifest.json")
    ap.add_argument("--source", choices=["manifest", "builtin", "h5", "folders"], default=None,
                    help="manifest: the data the models were trained on (default; folders when --faces is given)")
    ap.add_argument("--h5", default="", help="--source h5: file in the MIT lab layout")
    ap.add_argument("--faces", default="", help="face images (group sub-folders allowed); implies --source folders")
    ap.add_argument("--non-faces", default="", help="non-face images to go with --faces (optional: without them "
                                                     "only recall and the card are meaningful)")
    ap.add_argument("--groups", default="", help="with --faces: a CSV path,group (paths relative to --faces)")
    ap.add_argument("--resamples", type=int, default=CardConfig.resamples,
                    help="bootstrap resamples behind the card's intervals")
    ap.add_argument("--split", choices=["val", "all"], default=None,
                    help="val: the held-out split of training (default for --source manifest); all: every image")
    ap.add_argument("--cache-dir", default=str(environment().cache), help="(default: FACEDET_CACHE)")
    ap.add_argument("--out", default="eval.json", help="JSON result")
    ap.add_argument("--chart", default="eval_fairness.png", help="the fairness card's chart")
    ap.add_argument("--card", default="eval_card.md", help="the fairness card in Markdown")
    ap.add_argument("--photos", default="", help="a folder of photos to find faces in (needs --boxes)")
    ap.add_argument("--boxes", default="", help="--photos: CSV file,x,y,width,height,difficult of the true faces")
    ap.add_argument("--sheet", default="eval_photos", help="--photos: the drawn sheets' prefix (<prefix>_<model>.png)")
    args = ap.parse_args(argv)
    if bool(args.photos) != bool(args.boxes):
        ap.error("--photos and --boxes go together")
    args.source = args.source or ("folders" if args.faces else "manifest")
    if args.source == "folders" and not args.faces:
        ap.error("--source folders needs --faces DIR")
    if args.groups and not args.faces:
        ap.error("--groups goes with --faces")
    if args.resamples < 1:
        ap.error("--resamples must be >= 1")
    return args


def run_photos(args: argparse.Namespace) -> dict:
    models_dir, photos, boxes = Path(args.models_dir), Path(args.photos), Path(args.boxes)
    if not photos.is_dir():
        raise DataError(f"not a directory: {photos}")
    if not boxes.is_file():
        raise DataError(f"no such file: {boxes}")
    manifest = load_manifest(models_dir)
    result = evaluate_photos(models_dir, manifest, photos, boxes)
    truth = read_boxes(boxes)
    result["sheets"] = [str(photo_sheet(result, kind, photos, truth, Path(f"{args.sheet}_{kind}.png")))
                        for kind in result["models"]]
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def photos_table(result: dict) -> str:
    lines = [f"{result['data']['photos']} photos, {result['data']['faces']} faces (+{result['data']['difficult']} "
             "difficult, not counted), IoU >= 0.5:",
             f"{'model':<8}{'precision':>11}{'recall':>9}{'AP':>7}{'false alarms/photo':>20}"]
    for kind, m in result["models"].items():
        lines.append(f"{kind:<8}{m['precision']:>11.3f}{m['recall']:>9.3f}{m['average_precision']:>7.3f}"
                     f"{m['false_alarms_per_photo']:>20.2f}")
    return "\n".join(lines)


def training_faces(manifest: dict, cache_dir: str):
    """The models' own training split, the histograms' reference for rarity; None when it cannot be opened here."""
    try:
        source, train_idx, _ = manifest_split(manifest.get("data", {}), cache_dir)
    except (DataError, KeyError, OSError) as exc:
        log.warning("rarity is measured among the evaluated faces alone: the training data cannot be opened (%s)",
                    exc)
        return None
    return source, train_idx


def run(args: argparse.Namespace) -> dict:
    models_dir = Path(args.models_dir)
    manifest = load_manifest(models_dir)
    data = manifest.get("data", {})
    if args.source == "manifest":
        source, train_idx, indices = manifest_split(data, args.cache_dir)
        split = args.split or "val"
        reference = (source, train_idx)
    else:
        source = open_source(args.source, h5=args.h5, faces=args.faces, non_faces=args.non_faces,
                             groups=args.groups, cache_dir=args.cache_dir)
        split = args.split or "all"
        if split == "val":  # the same fraction and seed as the manifest's training split
            indices = stratified_split(source.labels, data["val_fraction"], data["seed"])[1]
        reference = training_faces(manifest, args.cache_dir)
    if split == "all":
        indices = np.arange(len(source))
    described = {"manifest": f"the {split} split of the models' own data"}.get(
        args.source, f"{args.faces or args.h5 or args.source}, {'every image' if split == 'all' else 'its val split'}")
    result = evaluate_models(models_dir, manifest["models"], source, indices,
                             CardInputs.for_manifest(manifest, described, reference, args.resamples))
    result["split"] = split
    if getattr(source, "skipped", 0):
        result["data"]["skipped_unreadable"] = source.skipped
    cards = {k: m["fairness"] for k, m in result["models"].items()}
    versions = ", ".join(f"{k} {m['version']}" for k, m in result["models"].items())
    Path(args.card).write_text(f"# Fairness card\n\nModels: {versions}\n\n{card_markdown(cards)}\n")
    chart = fairness_chart(cards, Path(args.chart), f"{described}; ONNX models {versions}")
    result["chart"], result["card"] = (str(chart) if chart else None), args.card
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = parse_args(argv)
    try:
        if args.photos:
            result = run_photos(args)
            print(photos_table(result))
            print(f"wrote {args.out} and {', '.join(result['sheets'])}")
            return 0
        result = run(args)
    except (DataError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    print(f"wrote {args.out}, {result['card']}" + (f" and {result['chart']}" if result["chart"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
