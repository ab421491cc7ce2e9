"""Pydantic classes: the manifest written by training, and every response body."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.contract import IMAGE_INPUT, MANIFEST_VERSION

# --- manifest.json, see the model contract in README.md and service/contract.py ---


class ManifestInput(BaseModel):
    name: Literal[IMAGE_INPUT] = IMAGE_INPUT
    layout: Literal["NCHW"] = "NCHW"
    channels: Literal[3] = 3
    size: int = Field(gt=0)
    channel_order: Literal["RGB"] = "RGB"
    dtype: Literal["float32"] = "float32"
    range: tuple[float, float] = (0.0, 1.0)
    preprocess: list[str] = []


class FairnessBin(BaseModel):
    name: str = Field(description="the group, or the rarity decile (1 the commonest, 10 the rarest)")
    faces: int = Field(ge=0)
    recall: float | None = Field(description="share of its faces at or above the model's threshold; null: no face")
    recall_ci: list[float] | None = Field(description="bootstrap interval [low, high]")
    mean_score: float | None = Field(description="its faces' mean face probability")
    mean_score_ci: list[float] | None


class FairnessBreakdown(BaseModel):
    kind: Literal["group", "rarity"]
    faces: int = Field(ge=0)
    unlabelled_faces: int = Field(0, ge=0, description="faces in no group")
    bins: list[FairnessBin]
    mean_sampling_weight: list[float] | None = Field(
        None, description="rarity only: each decile's mean resampling weight (1.0 = uniform)")
    largest_difference: float | None = Field(description="of recall between bins (equal opportunity difference)")
    largest_difference_ci: list[float] | None
    smallest_ratio: float | None = Field(description="of recall between bins")
    smallest_ratio_ci: list[float] | None


class FairnessCard(BaseModel):
    """Written by training (training/fairness.py), served as is: computed on held-out or user-given faces."""

    model_config = ConfigDict(extra="allow")
    data: dict[str, Any] = Field(description="the faces it was computed on, their size, and the training data's "
                                             "source and licence (training_data)")
    threshold: float
    bootstrap: dict[str, Any] = Field(description="resamples, seed, confidence, method")
    by_rarity: FairnessBreakdown | None = None
    by_group: FairnessBreakdown | None = None
    calibration: dict[str, Any] = Field(default_factory=dict, description="reliability curve data")


class FastScan(BaseModel):
    """A model's fast scan (training/fast_scan.py): what its stage-1 graph takes, and its low-rank error measured
    at export."""

    input: Literal["luma", "rgb"]  # luma: the level is the photo's PIL "L" image, one channel
    rank: int = Field(gt=0)
    max_error_near_threshold: float = Field(ge=0.0)


class BoxHead(BaseModel):
    """A model's box head (training/box_regression.py): a linear head on the fast scan's window features that says
    where the face is in a window; its fit, as measured at training."""

    features: Literal["fast_scan"]
    r2_held_out: dict[str, float] = {}


class LevelScan(BaseModel):
    """A model's level scan (training/level_scan.py): the fast scan's stage 1 for pyramid levels, read at
    input_scale of the fast scan's level size, and its error against the fast scan measured at export."""

    input_scale: float = Field(gt=0.0, le=1.0)
    precision: str
    max_error_near_threshold: float = Field(ge=0.0)
    candidates_kept: float = Field(ge=0.0, le=1.0)


class ManifestModel(BaseModel):
    version: str
    threshold: float = Field(ge=0.0, le=1.0)
    graphs: dict[str, str]
    metrics: dict[str, Any] = {}
    fairness: FairnessCard | None = None
    # The decoder's images (DB-VAE only): grey ones hold R = G = B and are served as one-channel pictures.
    # Manifests from before it was written had RGB decoders.
    output_colour: Literal["rgb", "grey"] = "rgb"
    fast_scan: FastScan | None = None  # with its two graphs; manifests from before it have none
    box_head: BoxHead | None = None  # with its graph; read only with a fast scan; manifests from before it have none
    level_scan: LevelScan | None = None  # with its graph; used only with a fast scan; manifests from before it have none


class ManifestFile(BaseModel):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class Localiser(BaseModel):
    """How the scan graphs are run (training/localiser.py LocaliserConfig); service/localiser.py follows it."""

    window: int = Field(gt=0)
    stride: int = Field(gt=0)
    scale_step: float = Field(gt=1.0)
    min_face_size: int = Field(gt=0)
    nms_iou: float = Field(ge=0.0, le=1.0)
    scan_threshold: float = Field(ge=0.0, le=1.0)  # a scanned window is a candidate from this probability on
    threshold: float = Field(ge=0.0, le=1.0)  # a refined candidate is a face from this crop probability on
    max_faces: int = Field(gt=0)
    # Windows a candidate's merged box needs; manifests from before it merged every single window: 1.
    min_neighbours: int = Field(1, ge=1)
    # The refining grid: shifts (fractions of the side, along x and y) and scales of each candidate's square.
    refine_shifts: list[float] = Field(min_length=1)
    refine_scales: list[float] = Field(min_length=1)
    crop_max_side: int = Field(gt=0)
    # The fast scan's exact stage scores every window whose approximate logit is within this of scan_threshold's.
    fast_scan_margin: float = Field(2.0, gt=0.0)
    # A refined box moves this share of the way its model's box head says the face is (where it has one).
    box_step: float = Field(0.5, ge=0.0, le=1.0)
    # A face covering more than this share of a better face's (the smaller's area) is dropped; 1 (manifests from
    # before it): none is.
    nested_overlap: float = Field(1.0, ge=0.0, le=1.0)


class Manifest(BaseModel):
    format_version: Literal[MANIFEST_VERSION]
    created: str | None = None
    input: ManifestInput
    latent_dim: int = Field(gt=0)
    localiser: Localiser
    models: dict[str, ManifestModel]
    files: dict[str, ManifestFile]


# --- responses ---


class Problem(BaseModel):
    """RFC 9457 problem details: every error body has this shape."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:facedet:problem:unsupported-image",
                    "title": "Unsupported image",
                    "status": 415,
                    "detail": "image[0] 'notes.txt': not a JPEG, PNG, WebP, GIF, BMP or TIFF image",
                }
            ]
        }
    )
    type: str
    title: str
    status: int
    detail: str
    error_id: str | None = None


class Box(BaseModel):
    x: int = Field(ge=0, description="left edge, px of the uploaded image after EXIF orientation")
    y: int = Field(ge=0, description="top edge, px")
    width: int = Field(gt=0)
    height: int = Field(gt=0)


    @classmethod
    def from_tuple(cls, box: tuple[int, int, int, int]) -> "Box":
        return cls(x=box[0], y=box[1], width=box[2], height=box[3])


class FaceUsed(BaseModel):
    box: Box
    source: Literal["request", "found", "centre"] = Field(
        description="request: the box asked for; found: the largest face found; centre: the centre square")


class Face(BaseModel):
    box: Box
    score: float = Field(ge=0.0, le=1.0, description="face probability of the (merged) window")


class Detection(BaseModel):
    filename: str | None
    face_probability: float = Field(ge=0.0, le=1.0, description="the best face's score; with no face, the best score of any window looked at")
    is_face: bool = Field(description="whether any face passed the threshold")
    threshold: float = Field(ge=0.0, le=1.0, description="the threshold applied to this image")
    faces: list[Face] | None = Field(None, description="highest score first; absent with boxes=false")


class DetectResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": "dbvae",
                    "model_version": "dbvae-1a2b3c4d",
                    "threshold": 0.5,
                    "provider": "CPUExecutionProvider",
                    "results": [{"filename": "photo.jpg", "face_probability": 0.9991, "is_face": True,
                                 "threshold": 0.985, "faces": [{"box": {"x": 412, "y": 96, "width": 131,
                                                                        "height": 131}, "score": 0.9991}]}],
                }
            ]
        }
    )
    model: str
    model_version: str
    threshold: float
    provider: str
    results: list[Detection]


class MorphFrames(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model_version": "dbvae-1a2b3c4d",
                    "steps": 2,
                    "size": 64,
                    "latent_distance": 7.41,
                    "frames": ["iVBORw0KGgo...", "iVBORw0KGgo..."],
                }
            ]
        }
    )
    model_version: str
    steps: int
    size: int
    latent_distance: float = Field(description="Euclidean distance between the latent means of a and b")
    frames: list[str] = Field(description="base64-encoded PNG frames, from a to b")
    frame_distances: list[dict[str, float]] = Field(
        default_factory=list, description="per frame, its RMS pixel distance (0..1) to frame 0 (to_a) and the last (to_b)")
    box_a: FaceUsed | None = None
    box_b: FaceUsed | None = None


class GraphInfo(BaseModel):
    file: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    providers: list[str] = Field(description="what the session actually uses, in order")
    warmed_batch_sizes: list[int]


class ModelInfo(BaseModel):
    name: str
    version: str
    threshold: float
    default: bool
    graphs: dict[str, GraphInfo]
    metrics: dict[str, Any]
    fairness: FairnessCard | None = Field(None, description="the fairness card in the manifest; null: none computed")
    output_colour: Literal["rgb", "grey"] | None = Field(
        None, description="what /v1/reconstruct and /v1/morph give out: rgb, or grey (one-channel PNG and GIF "
                          "frames) for a decoder trained on grey faces; null: the model has no decoder")


class ModelsResponse(BaseModel):
    input: ManifestInput
    latent_dim: int
    localiser: Localiser = Field(description="how /v1/detect scans photos (the manifest's localiser entry)")
    requested_providers: list[str]
    available_providers: list[str]
    models: list[ModelInfo]


class Readiness(BaseModel):
    status: Literal["ready"]
    providers: dict[str, str] = Field(description="graph -> the provider its session actually runs on")


class Liveness(BaseModel):
    status: Literal["alive"]
