"""Classification metrics for unbalanced face / non-face sets: never plain accuracy alone."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def sigmoid(logit: np.ndarray) -> np.ndarray:
    """Face probability from a logit, float64, without overflow for large |logit|."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(logit, dtype=np.float64)))


def binary_metrics(y: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, float]:
    y = np.asarray(y).astype(int).reshape(-1)
    pred = (np.asarray(prob).reshape(-1) >= threshold).astype(int)
    tp, tn = int(((pred == 1) & (y == 1)).sum()), int(((pred == 0) & (y == 0)).sum())
    fp, fn = int(((pred == 1) & (y == 0)).sum()), int(((pred == 0) & (y == 1)).sum())
    recall = tp / max(tp + fn, 1)
    specificity = tn / (tn + fp) if tn + fp else float("nan")  # a set of faces alone has no specificity
    return {
        "accuracy": (tp + tn) / max(len(y), 1),
        "balanced_accuracy": (recall + specificity) / 2,
        "precision": tp / max(tp + fp, 1),
        "recall": recall,
        "specificity": specificity,
        "roc_auc": float(roc_auc_score(y, prob)) if 0 < y.sum() < len(y) else float("nan"),
        "n": int(len(y)),
        "faces": int(y.sum()),
    }

