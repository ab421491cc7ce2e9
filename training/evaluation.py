"""Evaluate exported ONNX models (the files the service serves) with ONNX Runtime on any source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from training.contract import GRAPH_IO, SCORING_GRAPH
from training.data.h5 import H5Source
from training.data.image import to_model_input
from training.metrics import binary_metrics, group_metrics, sigmoid


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


def evaluate_models(models_dir: Path, models: dict, source: H5Source, indices: np.ndarray) -> dict:
    """models: the manifest's "models" entries (graphs and threshold of each). -> {"data": ..., "models": {kind:
    metrics}}, with per-group face accuracy when the source has groups."""
    y = source.labels[indices]
    result = {"data": {**source.describe(), "evaluated": int(len(indices)), "faces_evaluated": int(y.sum())},
              "models": {}}
    for kind, entry in models.items():
        prob = model_probabilities(models_dir, kind, entry, source, indices)
        threshold = float(entry["threshold"])
        metrics = binary_metrics(y, prob, threshold)
        if source.groups is not None and source.group_names:
            metrics["per_group"] = group_metrics(y, prob, source.groups[indices], source.group_names, threshold)
        result["models"][kind] = {"version": entry.get("version"), "threshold": threshold, **metrics}
    return result
