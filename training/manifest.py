"""models/manifest.json on the training side: the one writer (atomic, after evaluation, so it is written
whole once) and the one reader (which checks the files against it, as the service does at start-up)."""

from __future__ import annotations

import hashlib
import json
import platform
from datetime import datetime, timezone
from pathlib import Path

from training.contract import INPUT, MANIFEST_VERSION, MODEL_FILES
from training.data.h5 import DataError
from training.files import atomic_path, sha256_file


def library_versions() -> dict:
    import h5py
    import numpy as np
    import onnx
    import onnxruntime as ort
    import PIL
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": ort.__version__, "numpy": np.__version__, "pillow": PIL.__version__,
            "h5py": h5py.__version__}


def write_manifest(out_dir: Path, models: dict, latent_dim: int, data: dict, training: dict,
                   localiser: dict, created: str | None = None) -> dict:
    """models: {"cnn": {"graphs": ..., "threshold": ..., "metrics": ...}, "dbvae": {...}}; each model's version
    is derived from its graphs' hashes. localiser: how the scan graphs are run (training.localiser). created:
    when the models were trained and evaluated (now, unless given: training.reexport keeps the training's)."""
    files = {}
    for entry in models.values():
        for fname in entry["graphs"].values():
            p = out_dir / fname
            files[fname] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    for kind, entry in models.items():
        digest = hashlib.sha256("".join(files[f]["sha256"] for f in entry["graphs"].values()).encode())
        entry["version"] = f"{kind}-{digest.hexdigest()[:8]}"
    manifest = {
        "format_version": MANIFEST_VERSION,
        "created": created or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "input": INPUT,
        "latent_dim": latent_dim,
        "localiser": localiser,
        "models": models,
        "files": files,
        "data": data,
        "training": training,
        "versions": library_versions(),
    }
    with atomic_path(out_dir / "manifest.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_manifest(models_dir: Path) -> dict:
    """The manifest, once every graph it names is present with the size and SHA-256 it records."""
    path = models_dir / "manifest.json"
    if not path.is_file():
        raise DataError(f"no manifest.json in {models_dir}: train and export first (python -m training)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from exc
    if manifest.get("format_version") != MANIFEST_VERSION:
        raise DataError(f"{path}: format_version {manifest.get('format_version')!r}, expected {MANIFEST_VERSION}")
    for kind, entry in manifest.get("models", {}).items():
        if kind not in MODEL_FILES:
            raise DataError(f"{path}: unknown model {kind!r} (expected {', '.join(MODEL_FILES)})")
        for fname in entry["graphs"].values():
            expected, file = manifest["files"].get(fname), models_dir / fname
            if expected is None or not file.is_file():
                raise DataError(f"{file} is missing or not listed in the manifest's files")
            if file.stat().st_size != expected["bytes"] or sha256_file(file) != expected["sha256"]:
                raise DataError(f"{file} does not match the manifest (size or sha256): corrupt or replaced")
    return manifest
