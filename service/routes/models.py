"""GET /v1/models: what is loaded, from which files, on which provider, and how it scored."""

from __future__ import annotations

import onnxruntime as ort
from fastapi import APIRouter

from service.deps import PipelineDep
from service.routes import UNEXPECTED
from service.schemas import GraphInfo, ModelInfo, ModelsResponse

router = APIRouter(tags=["models"])


def _args(args: list) -> list[dict]:
    return [{"name": a.name, "shape": a.shape, "type": a.type} for a in args]


@router.get("/v1/models", response_model=ModelsResponse, summary="Loaded models, versions, providers, metrics",
             responses=UNEXPECTED)
async def list_models(pipeline: PipelineDep) -> ModelsResponse:
    runtime, settings = pipeline.runtime, pipeline.settings
    models = []
    for name, entry in runtime.manifest.models.items():
        graphs = {key.split(".", 1)[1]: g for key, g in runtime.graphs.items() if key.startswith(f"{name}.")}
        if not graphs:
            continue
        models.append(ModelInfo(
            name=name, version=entry.version, threshold=runtime.threshold(name),
            default=name == settings.default_model, metrics=entry.metrics, fairness=entry.fairness,
            output_colour=entry.output_colour if "decoder" in graphs else None,
            graphs={role: GraphInfo(file=g.file, inputs=_args(g.session.get_inputs()),
                                    outputs=_args(g.session.get_outputs()), providers=g.providers,
                                    warmed_batch_sizes=g.warmed_batch_sizes) for role, g in graphs.items()},
        ))
    return ModelsResponse(input=runtime.manifest.input, latent_dim=runtime.manifest.latent_dim,
                          localiser=runtime.manifest.localiser,
                          requested_providers=settings.providers,
                          available_providers=ort.get_available_providers(), models=models)
