"""Evaluate exported ONNX models (the files the service serves) with ONNX Runtime on any source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from training.contract import GRAPH_IO, SCORING_GRAPH
from training.data.h5 import H5Source
from training.data.image import open_photo, to_model_input
from training.fairness import CardInputs, model_card, rarity
from training.metrics import binary_metrics, sigmoid


def onnx_probabilities(graph: Path, source: H5Source, indices: np.ndarray, role: str, batch: int = 256) -> np.ndarray:
    """Face probability [N] from the `role` graph (classifier or encoder: both output the face logit)."""
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    name_in = GRAPH_IO[role][0]
    out = [session.run(["logit"], {name_in: to_model_input(source.read(indices[i:i + batch]))})[0]
           for i in range(0, len(indices), batch)]
    return sigmoid(np.concatenate(out)) if out else np.zeros(0)


def model_probabilities(models_dir: Path, kind: str, entry: dict, source: H5Source, indices: np.ndarray) -> np.ndarray:
    """One manifest model entry's face probabilities [N] on source[indices]."""
    role = SCORING_GRAPH[kind]
    return onnx_probabilities(models_dir / entry["graphs"][role], source, indices, role)


def evaluate_models(models_dir: Path, models: dict, source: H5Source, indices: np.ndarray,
                    card: CardInputs | None = None) -> dict:
    """models: the manifest's "models" entries (graphs and threshold of each). -> {"data": ..., "models": {kind:
    metrics}}; with `card`, each model's fairness card on the same faces (under "fairness")."""
    y = source.labels[indices]
    result = {"data": {**source.describe(), "evaluated": int(len(indices)), "faces_evaluated": int(y.sum())},
              "models": {}}
    probs = {}
    for kind, entry in models.items():
        probs[kind] = prob = model_probabilities(models_dir, kind, entry, source, indices)
        threshold = float(entry["threshold"])
        metrics = binary_metrics(y, prob, threshold)
        if kind == "dbvae":
            metrics["reconstruction"] = onnx_reconstruction(models_dir, entry, source, indices)
        result["models"][kind] = {"version": entry.get("version"), "threshold": threshold, **metrics}
    if card is not None:
        for kind, c in fairness_cards(models_dir, models, source, indices, probs, card).items():
            result["models"][kind]["fairness"] = c
    return result


def onnx_mu(models_dir: Path, entry: dict, source: H5Source, indices: np.ndarray) -> np.ndarray:
    """The exported DB-VAE encoder's latent means [N, D] of source[indices]."""
    enc = ort.InferenceSession(str(models_dir / entry["graphs"]["encoder"]), providers=["CPUExecutionProvider"])
    out = [enc.run(["mu"], {GRAPH_IO["encoder"][0]: to_model_input(source.read(indices[i:i + 256]))})[0]
           for i in range(0, len(indices), 256)]
    return np.concatenate(out) if out else np.zeros((0, enc.get_outputs()[1].shape[1]), np.float32)


def onnx_reconstruction(models_dir: Path, entry: dict, source: H5Source, indices: np.ndarray) -> dict:
    """The exported DB-VAE's decode(mu) of the evaluated faces (at most reconstruction.MAX_FACES), scored."""
    from training.reconstruction import MAX_FACES, decoded_summary

    faces_idx = indices[source.labels[indices] == 1][:MAX_FACES]
    if not len(faces_idx):
        return {"faces": 0}
    dec = ort.InferenceSession(str(models_dir / entry["graphs"]["decoder"]), providers=["CPUExecutionProvider"])
    mu = onnx_mu(models_dir, entry, source, faces_idx)
    decode = lambda z: np.clip(dec.run(["image"], {GRAPH_IO["decoder"][0]: z})[0], 0, 1).transpose(0, 2, 3, 1)  # noqa: E731
    return decoded_summary(source.read(faces_idx).astype(np.float32) / 255.0, mu, decode)


def fairness_cards(models_dir: Path, models: dict, source: H5Source, indices: np.ndarray, probs: dict,
                   card: CardInputs) -> dict:
    """Every model's card on the same evaluated faces: per group when the source has groups, and per rarity decile
    of the exported DB-VAE's latent space (when there is a DB-VAE) for every model alike."""
    y = source.labels[indices]
    faces = indices[y == 1]
    rarity_p, reference = None, "none: no DB-VAE among the models"
    if "dbvae" in models:
        mu = onnx_mu(models_dir, models["dbvae"], source, faces)
        ref_mu = np.zeros((0, mu.shape[1]), np.float32)
        reference = f"the {len(faces)} evaluated faces"
        if card.reference is not None:
            ref_source, ref_idx = card.reference
            ref_idx = ref_idx[ref_source.labels[ref_idx] == 1]
            ref_mu = onnx_mu(models_dir, models["dbvae"], ref_source, ref_idx)
            reference = f"{len(ref_idx)} training faces and the {len(faces)} evaluated faces"
        rarity_p = rarity(mu, ref_mu, card.hist_bins, card.smoothing)
    named = source.groups is not None and bool(source.group_names)
    data = {**card.data, "faces": int(y.sum()), "non_faces": int(len(y) - y.sum()),
            "groups": list(source.group_names) if named else None,
            "rarity": f"the DB-VAE resampling's sampling probability (histograms of {card.hist_bins} bins per latent "
                      f"dimension, smoothing {card.smoothing}) over {reference}" if rarity_p is not None else None}
    return {kind: model_card(y, probs[kind], float(entry["threshold"]), card.config, rarity_p=rarity_p,
                             groups=source.groups[indices] if named else None,
                             group_names=source.group_names if named else None, data=data)
            for kind, entry in models.items()}


# ---------------------------------------------------------------------------------------------
# Localisation on photos with true boxes (PASCAL VOC / WIDER FACE style)

PHOTO_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}


def read_boxes(path: Path) -> dict[str, list[tuple[float, float, float, float, bool]]]:
    """boxes.csv (file,x,y,width,height,difficult) -> {file: [(x, y, w, h, difficult)]}. A photo of the folder
    with no row holds no face."""
    import csv

    out: dict[str, list] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(row["file"], []).append((float(row["x"]), float(row["y"]), float(row["width"]),
                                                    float(row["height"]), row.get("difficult", "0").strip() == "1"))
    return out


def match(found: np.ndarray, truth: list, iou_min: float = 0.5) -> tuple[np.ndarray, int]:
    """Greedy VOC matching, best score first: -> (per found box 1 = true positive, 0 = false alarm, -1 = matched a
    'difficult' face and so not counted; the number of faces to find, difficult ones left out)."""
    from training.localiser import iou

    gt = np.array([t[:4] for t in truth], dtype=np.float64).reshape(-1, 4)
    difficult = np.array([t[4] for t in truth], dtype=bool)
    taken = np.zeros(len(gt), dtype=bool)
    outcome = np.zeros(len(found), dtype=np.int64)
    for k in np.argsort(-found[:, 4], kind="stable"):
        if not len(gt):
            break
        overlaps = iou(found[k], gt)
        j = int(np.argmax(overlaps))
        if overlaps[j] >= iou_min:
            if difficult[j]:
                outcome[k] = -1
            elif not taken[j]:
                outcome[k], taken[j] = 1, True
    return outcome, int((~difficult).sum())


def average_precision(scores: np.ndarray, outcome: np.ndarray, positives: int) -> float:
    """Area under the precision-recall curve with VOC's all-points interpolation (precision made monotone)."""
    keep = outcome >= 0
    order = np.argsort(-scores[keep], kind="stable")
    tp = (outcome[keep][order] == 1).astype(np.float64)
    if not positives:
        return float("nan")
    recall = np.r_[0.0, np.cumsum(tp) / positives]
    precision = np.r_[1.0, np.cumsum(tp) / np.arange(1, len(tp) + 1)]
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum((recall[1:] - recall[:-1]) * precision[1:]))


def evaluate_photos(models_dir: Path, manifest: dict, photos: Path, boxes_csv: Path) -> dict:
    """Each model's localiser on every photo of the folder against the true boxes -> precision, recall, AP at
    IoU >= 0.5, false alarms per photo, and the boxes found (for the sheet)."""
    from training.localiser import Localiser, LocaliserConfig

    truth = read_boxes(boxes_csv)
    files = sorted(p for p in photos.iterdir() if p.suffix.lower() in PHOTO_EXTENSIONS)
    missing = sorted(set(truth) - {p.name for p in files})
    if missing:
        raise ValueError(f"{boxes_csv} names photos that are not in {photos}: {', '.join(missing)}")
    cfg = LocaliserConfig(**manifest["localiser"])
    images = {p.name: open_photo(p) for p in files}
    result = {"data": {"photos": len(files), "faces": sum(1 for t in truth.values() for b in t if not b[4]),
                       "difficult": sum(1 for t in truth.values() for b in t if b[4]), "folder": str(photos),
                       "boxes": str(boxes_csv)}, "localiser": cfg.to_dict(), "models": {}}
    for kind, entry in manifest["models"].items():
        localiser = Localiser.for_model(models_dir, entry, cfg)
        result["models"][kind] = {"version": entry.get("version"), **score_photos(localiser.locate, images, truth)}
    return result


def score_photos(locate, images: dict, truth: dict) -> dict:
    """Any detector (`locate`: RGB photo -> [M, 5] boxes with a score) on named photos against the true boxes
    -> precision, recall, AP at IoU >= 0.5, false alarms per photo, and per photo what it found."""
    scores, outcomes, positives, per_photo = [], [], 0, {}
    for name, image in images.items():
        found = locate(image)
        outcome, n = match(found, truth.get(name, []))
        scores.append(found[:, 4])
        outcomes.append(outcome)
        positives += n
        per_photo[name] = {"found": np.round(found, 3).tolist(), "outcome": outcome.tolist()}
    s, o = np.concatenate(scores), np.concatenate(outcomes)
    tp, fp = int((o == 1).sum()), int((o == 0).sum())
    return {"precision": tp / max(tp + fp, 1), "recall": tp / max(positives, 1),
            "average_precision": average_precision(s, o, positives), "true_positives": tp, "false_alarms": fp,
            "false_alarms_per_photo": fp / max(len(images), 1), "faces": positives, "photos": per_photo}
