"""How well the committed DB-VAE gives back faces from real photographs that no split holds: the boxed faces of
the photo set (bench/photos/boxes.csv, its 'difficult' ones left out), each cut out as the service cuts a face
for /v1/reconstruct (service.localiser.face_square, then 64x64 bilinear), encoded and decoded by the exported
graphs in ONNX Runtime, and scored by training.reconstruction.summary: PSNR, SSIM, own-face correlation,
identifiability top-1 / top-5 among these faces, morph ends, and morphs nearing B frame by frame.

The same is done for the faces the DB-VAE's localiser finds (threshold as the service's default, a found box
matching a boxed face at IoU >= 0.5), cut out around the localiser's own box: what /v1/reconstruct and /v1/morph
use for a photo sent without a box. Beside it, the same faces cut out around their boxes by hand, so both rows
hold the same faces and the same chance of being identified.

A decoder the manifest marks grey is scored against the grey of each face (it has no colour to give back);
an RGB one against the colour face. The held-out split's figures are in the manifest; these are from outside.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from bench.common import OUT_HELP, PHOTO_SET, fetch_photos, finish, machine, table
from service.localiser import face_square
from training.data.image import IMAGE_SIZE, to_model_input
from training.environment import environment
from training.evaluation import open_photo, read_boxes
from training.localiser import Localiser, LocaliserConfig, iou
from training.manifest import load_manifest
from training.reconstruction import decoded_summary

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("psnr_db", "ssim", "correlation_own", "correlation_others", "identified_top1", "identified_top5",
           "morph_ends_identified", "morph_nearing_b")


def cut(photo: Image.Image, box: tuple[float, float, float, float]) -> np.ndarray:
    """A face as the service cuts it for /v1/reconstruct: the square around its box, 64x64 bilinear."""
    x, y, w, h = (round(v) for v in box)
    return np.asarray(photo.crop(face_square((x, y, w, h), *photo.size)).resize((IMAGE_SIZE, IMAGE_SIZE),
                                                                               Image.Resampling.BILINEAR))


def photo_faces(photos: Path, boxes: Path, localiser: Localiser | None = None) -> tuple[np.ndarray, list[str]]:
    """-> (uint8 [N, 64, 64, 3] face squares, "file#k" names) of every boxed face that is not 'difficult'. With a
    localiser, only the faces it finds (a found box at IoU >= 0.5, the best-scoring one), cut around its box."""
    faces, names = [], []
    for name, truths in sorted(read_boxes(boxes).items()):
        photo = open_photo(photos / name)
        found = localiser.locate(photo) if localiser is not None else None
        for k, (x, y, w, h, difficult) in enumerate(truths):
            if difficult:
                continue
            box = (x, y, w, h)
            if found is not None:
                hits = found[iou(np.array(box), found) >= 0.5] if len(found) else found
                if not len(hits):
                    continue
                box = tuple(hits[0, :4])  # found boxes come best first
            faces.append(cut(photo, box))
            names.append(f"{name}#{k}")
    return np.stack(faces), names


def scored(models_dir: Path, entry: dict, faces: np.ndarray) -> dict:
    """The exported encoder's mu and decoder's decode(mu) of `faces`, scored as the held-out faces are."""
    opts = ["CPUExecutionProvider"]
    enc = ort.InferenceSession(str(models_dir / entry["graphs"]["encoder"]), providers=opts)
    dec = ort.InferenceSession(str(models_dir / entry["graphs"]["decoder"]), providers=opts)
    mu = enc.run(["mu"], {"image": to_model_input(faces)})[0]
    target = faces.astype(np.float32) / 255.0
    if entry.get("output_colour") == "grey":
        grey = np.asarray([np.asarray(Image.fromarray(f).convert("L")) for f in faces], np.float32) / 255.0
        target = np.repeat(grey[..., None], 3, axis=-1)
    return decoded_summary(target, mu, lambda z: np.clip(dec.run(["image"], {"z": z})[0], 0, 1).transpose(0, 2, 3, 1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.reconstruction", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", default=str(ROOT / "models"))
    ap.add_argument("--photos", default="", help="folder with photos/ (default: fetched into FACEDET_CACHE/photos)")
    ap.add_argument("--out", default="reconstruction_photos", help=OUT_HELP)
    args = ap.parse_args(argv)
    folder = fetch_photos(Path(args.photos) if args.photos else environment().cache / "photos")
    models_dir = Path(args.models_dir)
    manifest = load_manifest(models_dir)
    entry = manifest["models"]["dbvae"]
    faces, names = photo_faces(folder / "photos", PHOTO_SET / "boxes.csv")
    figures = scored(models_dir, entry, faces)
    localiser = Localiser.for_model(models_dir, entry, LocaliserConfig(**manifest["localiser"]))
    found, found_names = photo_faces(folder / "photos", PHOTO_SET / "boxes.csv", localiser)
    localised = scored(models_dir, entry, found)
    by_hand = scored(models_dir, entry, faces[[names.index(n) for n in found_names]])
    held_out = entry["metrics"]["val"].get("reconstruction", {})
    rows = [{"set": "photo set", **figures}, {"set": "found: localiser's boxes", **localised},
            {"set": "found: boxes by hand", **by_hand}, {"set": "held-out split", **held_out}]
    cols = [("set", "faces of", ""), ("faces", "faces", "d")] + [(k, k.replace("_", " "), ".3f") for k in FIGURES]
    print(f"\nDB-VAE {entry['version']} ({entry.get('output_colour', 'rgb')} output), decode(mu):")
    print(table(rows, cols))
    return finish(args.out, {"benchmark": "reconstruction", "machine": machine(1), "model": entry["version"],
                             "output_colour": entry.get("output_colour", "rgb"), "faces": names,
                             "framing": "service.localiser.face_square of each boxed face, 64x64 bilinear",
                             "photo_set": figures, "held_out": held_out,
                             "found": {"faces": found_names, "localiser": manifest["localiser"],
                                       "localiser_boxes": localised, "boxes_by_hand": by_hand}})


if __name__ == "__main__":
    raise SystemExit(main())
