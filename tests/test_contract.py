"""The model contract is written down once on each side of the wall (training/contract.py, service/contract.py):
the two copies must say the same, and what training writes must be what the service reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from service import contract as served
from service.schemas import Manifest
from service.settings import Settings
from training import contract as trained
from training.data import image as training_image

MODELS = Path(__file__).resolve().parents[1] / "models"


def test_both_sides_describe_the_same_graphs() -> None:
    assert served.MANIFEST_VERSION == trained.MANIFEST_VERSION
    assert served.IMAGE_INPUT == trained.IMAGE_INPUT
    assert served.LATENT_INPUT == trained.LATENT_INPUT
    assert served.GRAPH_IO == trained.GRAPH_IO
    assert served.MODEL_GRAPHS == trained.MODEL_GRAPHS
    assert served.FAST_SCAN_GRAPHS == trained.FAST_SCAN_GRAPHS
    assert served.BOX_HEAD_GRAPH == trained.BOX_HEAD_GRAPH
    assert served.LEVEL_SCAN_GRAPH == trained.LEVEL_SCAN_GRAPH
    assert served.SCORING_GRAPH == trained.SCORING_GRAPH


def test_every_scoring_graph_outputs_the_face_logit() -> None:
    for contract in (served, trained):
        for model, role in contract.SCORING_GRAPH.items():
            assert role in contract.MODEL_GRAPHS[model]
            assert contract.GRAPH_IO[role][1][0] == "logit"


def test_the_committed_manifest_follows_both_copies() -> None:
    raw = json.loads((MODELS / "manifest.json").read_text())
    manifest = Manifest.model_validate(raw)  # the service's reading of it
    assert raw["input"] == trained.INPUT
    assert manifest.input.size == trained.IMAGE_SIZE
    for model, files in trained.MODEL_FILES.items():
        assert raw["models"][model]["graphs"] == {**files, trained.BOX_HEAD_GRAPH: trained.BOX_HEAD_FILES[model],
                                                   trained.LEVEL_SCAN_GRAPH: trained.LEVEL_SCAN_FILES[model]}


def test_both_sides_refuse_images_over_the_same_pixel_cap() -> None:
    assert training_image.MAX_PIXELS == Settings.model_fields["max_image_pixels"].default


@pytest.mark.parametrize("record", ["box_head", "level_scan"])
def test_the_service_refuses_a_record_without_its_graph(tmp_path: Path, record: str) -> None:
    """A model entry's box_head or level_scan record names a graph the entry must have (both optional)."""
    from service.manifest import ModelError
    from service.runtime import Runtime

    models = tmp_path / "models"
    shutil.copytree(MODELS, models)
    manifest = json.loads((models / "manifest.json").read_text())
    del manifest["models"]["cnn"]["graphs"][record]
    (models / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match=f"model 'cnn' has a {record} record but no '{record}' graph"):
        Runtime.load(Settings(models_dir=models, providers=["CPUExecutionProvider"]))
