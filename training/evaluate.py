"""`python -m training.evaluate`: evaluate the exported ONNX models (the files the service serves) on any source.

    python -m training.evaluate --models-dir models                       # the held-out split
    python -m training.evaluate --source folders --faces ppb/ --non-faces neg/   # a labelled set

When the face folder has group sub-folders (e.g. LF/ LM/ DF/ DM/), accuracy per group and the gap
between the best and the worst group are reported, and a bar chart compares the models per group.
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
from training.evaluation import evaluate_models
from training.manifest import load_manifest
from training.reporting import format_table, group_chart


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", default="models", help="directory with the ONNX files and manifest.json")
    ap.add_argument("--source", choices=["manifest", "builtin", "h5", "folders"], default="manifest",
                    help="manifest: the data the models were trained on (default)")
    ap.add_argument("--h5", default="", help="--source h5: file in the MIT lab layout")
    ap.add_argument("--faces", default="", help="--source folders: face images (group sub-folders allowed)")
    ap.add_argument("--non-faces", default="", help="--source folders: non-face images")
    ap.add_argument("--split", choices=["val", "all"], default=None,
                    help="val: the held-out split of training (default for --source manifest); all: every image")
    ap.add_argument("--cache-dir", default=str(environment().cache), help="(default: FACEDET_CACHE)")
    ap.add_argument("--out", default="eval.json", help="JSON result")
    ap.add_argument("--chart", default="eval_groups.png", help="per-group bar chart (written when groups exist)")
    return ap.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    models_dir = Path(args.models_dir)
    manifest = load_manifest(models_dir)
    data = manifest.get("data", {})
    if args.source == "manifest":
        source, _, indices = manifest_split(data, args.cache_dir)
        split = args.split or "val"
    else:
        source = open_source(args.source, h5=args.h5, faces=args.faces, non_faces=args.non_faces,
                             cache_dir=args.cache_dir)
        split = args.split or "all"
        if split == "val":  # the same fraction and seed as the manifest's training split
            indices = stratified_split(source.labels, data["val_fraction"], data["seed"])[1]
    if split == "all":
        indices = np.arange(len(source))
    result = evaluate_models(models_dir, manifest["models"], source, indices)
    result["split"] = split
    if getattr(source, "skipped", 0):
        result["data"]["skipped_unreadable"] = source.skipped
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    chart = group_chart(result, Path(args.chart))
    result["chart"] = str(chart) if chart else None
    return result


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = parse_args(argv)
    try:
        result = run(args)
    except (DataError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    print(f"wrote {args.out}" + (f" and {result['chart']}" if result["chart"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
