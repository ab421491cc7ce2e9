"""The fairness card: face recall per group and per latent-rarity decile, with seeded bootstrap intervals, for every
model on the same faces, built on fairlearn.metrics.MetricFrame.

A face / non-face classifier has one positive class, and non-faces have no group, so equalized odds reduces to
equal opportunity: recall (the true-positive rate) per group, its largest difference and its smallest ratio.

Without any labels the card follows the paper's own idea (Amini et al., AIES 2019, §3): the DB-VAE's latent space
says which faces are rare. Each evaluated face gets the sampling probability the resampling gives it
(training.resampling.sampling_probabilities, the same per-dimension histograms, over the training faces together
with the evaluated ones), and the evaluated faces are split by it into deciles, 1 the commonest, 10 the rarest.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

NO_GROUP = -1  # a face without a label: in no group's figures


@dataclass(frozen=True)
class CardConfig:
    resamples: int = 1000  # bootstrap resamples of the faces (fairlearn's n_boot)
    seed: int = 0  # the bootstrap's random_state: the same faces give the same intervals
    confidence: float = 0.95
    rarity_bins: int = 10  # deciles
    calibration_min_faces: int = 20  # a group's reliability curve is reported from this many faces
    calibration_bins: int = 10

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CardInputs:
    """What a card needs beyond the evaluated images: its settings, the DB-VAE resampling's histogram settings (the
    manifest's training config), what the card says about the data, and the training faces the rarity histograms
    are built over ((source, indices); None: the evaluated faces alone)."""

    config: CardConfig
    hist_bins: int
    smoothing: float
    data: dict
    reference: tuple | None = None

    @classmethod
    def for_manifest(cls, manifest: dict, evaluated: str, reference: tuple | None,
                     resamples: int = CardConfig.resamples) -> "CardInputs":
        """For exported models: the histogram settings and the bootstrap seed of their own training run."""
        from training.data.sources import provenance

        training, data = manifest.get("training", {}), manifest.get("data", {})
        return cls(CardConfig(resamples=resamples, seed=data.get("seed", 0)), training.get("hist_bins", 10),
                   training.get("smoothing", 1e-3), {"evaluated": evaluated, "training_data": provenance(data)},
                   reference)


def _number(v) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def _interval(lo, hi) -> list[float] | None:
    lo, hi = _number(lo), _number(hi)
    return None if lo is None or hi is None else [lo, hi]


def _recall(y_true, y_pred) -> float:
    from sklearn.metrics import recall_score

    return recall_score(y_true, y_pred, zero_division=np.nan)


def _mean_score(y_true, y_pred, score) -> float:
    return float(np.mean(score)) if len(score) else float("nan")


def breakdown(scores: np.ndarray, threshold: float, labels: np.ndarray, names: list[str], cfg: CardConfig,
              kind: str) -> dict:
    """Faces only. scores [F]: face probabilities; labels [F]: index into names, or NO_GROUP. -> per bin its size,
    recall and mean face probability with their bootstrap intervals; across bins the largest difference and the
    smallest ratio of recall, with intervals. A bin with no face is listed with nulls."""
    from fairlearn.metrics import MetricFrame

    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels)
    keep = labels != NO_GROUP
    out = {"kind": kind, "faces": int(keep.sum()), "unlabelled_faces": int((~keep).sum()), "bins": [],
           "largest_difference": None, "largest_difference_ci": None, "smallest_ratio": None,
           "smallest_ratio_ci": None}
    present = {}
    if keep.any():
        tail = (1 - cfg.confidence) / 2
        frame = MetricFrame(metrics={"recall": _recall, "mean_score": _mean_score},
                            y_true=np.ones(int(keep.sum()), dtype=int), y_pred=(scores[keep] >= threshold).astype(int),
                            sensitive_features=np.asarray(names, dtype=object)[labels[keep]],
                            sample_params={"mean_score": {"score": scores[keep]}},
                            n_boot=cfg.resamples, ci_quantiles=[tail, 1 - tail], random_state=cfg.seed)
        lo, hi = frame.by_group_ci
        present = {name: (frame.by_group.loc[name], lo.loc[name], hi.loc[name]) for name in frame.by_group.index}
        (d_lo, d_hi), (r_lo, r_hi) = frame.difference_ci(), frame.ratio_ci()
        out.update(largest_difference=_number(frame.difference()["recall"]),
                   largest_difference_ci=_interval(d_lo["recall"], d_hi["recall"]),
                   smallest_ratio=_number(frame.ratio()["recall"]),
                   smallest_ratio_ci=_interval(r_lo["recall"], r_hi["recall"]))
    for i, name in enumerate(names):
        entry = {"name": name, "faces": int((labels == i).sum()), "recall": None, "recall_ci": None,
                 "mean_score": None, "mean_score_ci": None}
        if name in present:
            point, lo, hi = present[name]
            entry.update(recall=_number(point["recall"]), recall_ci=_interval(lo["recall"], hi["recall"]),
                         mean_score=_number(point["mean_score"]),
                         mean_score_ci=_interval(lo["mean_score"], hi["mean_score"]))
        out["bins"].append(entry)
    return out


def rarity_deciles(sampling_p: np.ndarray, bins: int) -> tuple[np.ndarray, list[str]]:
    """Sampling probability of each evaluated face [F] -> (its bin [F], 0 the commonest; the bin names): equal-count
    bins in order of probability (ties broken by position, so the split is deterministic)."""
    order = np.argsort(sampling_p, kind="stable")
    labels = np.empty(len(order), dtype=np.int64)
    for b, chunk in enumerate(np.array_split(order, bins)):
        labels[chunk] = b
    names = [f"{b + 1}" + (" (commonest)" if b == 0 else " (rarest)" if b == bins - 1 else "") for b in range(bins)]
    return labels, names


def rarity(mu_evaluated: np.ndarray, mu_reference: np.ndarray, hist_bins: int, smoothing: float) -> np.ndarray:
    """The resampling's sampling probability of each evaluated face [F], its histograms built over the reference
    (training) faces together with the evaluated ones; scaled so that 1.0 is uniform over all of them."""
    import torch

    from training.resampling import sampling_probabilities

    both = np.concatenate([mu_reference, mu_evaluated]).astype(np.float64)
    p = sampling_probabilities(torch.from_numpy(both), hist_bins, smoothing).numpy()
    return p[len(mu_reference):] * len(both)


def calibration(y: np.ndarray, prob: np.ndarray, bins: int) -> list[dict]:
    """Reliability curve data: per equal-width probability bin that holds any image, its mean predicted face
    probability, the fraction of faces in it, and how many images."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(prob, edges[1:-1]), 0, bins - 1)
    return [{"bin": [float(edges[b]), float(edges[b + 1])], "mean_predicted": float(prob[which == b].mean()),
             "fraction_faces": float(y[which == b].mean()), "images": int((which == b).sum())}
            for b in range(bins) if (which == b).any()]


def model_card(y: np.ndarray, prob: np.ndarray, threshold: float, cfg: CardConfig, *, rarity_p: np.ndarray | None,
               groups: np.ndarray | None, group_names: list[str] | None, data: dict) -> dict:
    """One model's card on the evaluated images. y, prob [N]: labels and face probabilities; rarity_p [F] (faces in
    order) from `rarity`, or None without a DB-VAE; groups [N] index into group_names or NO_GROUP."""
    y, prob = np.asarray(y).astype(int), np.asarray(prob, dtype=np.float64)
    faces = y == 1
    card = {"data": data, "threshold": float(threshold), "bootstrap": {
        "resamples": cfg.resamples, "seed": cfg.seed, "confidence": cfg.confidence,
        "method": "fairlearn MetricFrame n_boot: the evaluated faces resampled with replacement, percentile interval"},
        "by_rarity": None, "by_group": None, "calibration": {"overall": calibration(y, prob, cfg.calibration_bins)}}
    if rarity_p is not None and faces.sum() >= cfg.rarity_bins:
        labels, names = rarity_deciles(rarity_p, cfg.rarity_bins)
        card["by_rarity"] = breakdown(prob[faces], threshold, labels, names, cfg, "rarity")
        card["by_rarity"]["mean_sampling_weight"] = [float(rarity_p[labels == b].mean()) for b in range(len(names))]
    if groups is not None and group_names:
        card["by_group"] = breakdown(prob[faces], threshold, np.asarray(groups)[faces], group_names, cfg, "group")
        # A group's faces beside every non-face (non-faces have no group), where the group has enough faces.
        card["calibration"]["per_group"] = {
            name: calibration(y[(groups == i) | ~faces], prob[(groups == i) | ~faces], cfg.calibration_bins)
            for i, name in enumerate(group_names) if ((groups == i) & faces).sum() >= cfg.calibration_min_faces}
    return card
