"""Read models/manifest.json and check every model file against it before anything is loaded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import ValidationError

from service.contract import BOX_HEAD_GRAPH, FAST_SCAN_GRAPHS, LEVEL_SCAN_GRAPH, MODEL_GRAPHS
from service.schemas import Manifest


class ModelError(Exception):
    """A missing, corrupt or mismatched model file, already phrased as the one line the operator sees."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(models_dir: Path) -> Manifest:
    path = models_dir / "manifest.json"
    if not models_dir.is_dir():
        raise ModelError(f"models directory {models_dir} does not exist (FACEDET_MODELS_DIR)")
    try:
        manifest = Manifest.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ModelError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ModelError(f"{path} does not follow the contract: {where}: {first['msg']}") from None

    for model, graphs in MODEL_GRAPHS.items():
        if model not in manifest.models:
            raise ModelError(f"{path} has no '{model}' model")
        for graph in graphs:
            file = manifest.models[model].graphs.get(graph)
            if file is None:
                raise ModelError(f"{path}: model '{model}' has no '{graph}' graph")
            verify_file(models_dir, manifest, file)
        if manifest.models[model].fast_scan is not None:
            for graph in FAST_SCAN_GRAPHS:
                file = manifest.models[model].graphs.get(graph)
                if file is None:
                    raise ModelError(f"{path}: model '{model}' has a fast_scan record but no '{graph}' graph")
                verify_file(models_dir, manifest, file)
        for record, graph in (("box_head", BOX_HEAD_GRAPH), ("level_scan", LEVEL_SCAN_GRAPH)):
            if getattr(manifest.models[model], record) is not None:
                file = manifest.models[model].graphs.get(graph)
                if file is None:
                    raise ModelError(f"{path}: model '{model}' has a {record} record but no '{graph}' graph")
                verify_file(models_dir, manifest, file)
    return manifest


def verify_file(models_dir: Path, manifest: Manifest, file: str) -> None:
    path = models_dir / file
    expected = manifest.files.get(file)
    if expected is None:
        raise ModelError(f"{file} is not listed in the manifest's 'files', so it cannot be verified")
    if not path.is_file():
        raise ModelError(f"{path} is missing")
    size = path.stat().st_size
    if size != expected.bytes:
        raise ModelError(f"{path} is {size} bytes, the manifest says {expected.bytes}: corrupt or replaced")
    actual = sha256_of(path)
    if actual != expected.sha256:
        raise ModelError(f"{path} sha256 {actual[:12]}… does not match the manifest's "
                         f"{expected.sha256[:12]}…: corrupt or replaced")
