"""GET /models (what each served model is for), /models/{name} and its sample clips.

Open like /model (no key): they say what a model expects, not what a caller sent.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from service.api.deps import EngineDep
from service.api.guard import PublicRoute
from service.api.problems import Problem, responses
from service.engine import Engine

router = APIRouter(tags=["models"], route_class=PublicRoute)  # no key needed


def summary(engine: Engine, name: str) -> dict:
    """One model as GET /models lists it."""
    manifest = engine.resolve(name)
    doc = manifest.doc
    return {
        "name": name, "default": name == engine.catalogue.default, "url": f"/models/{name}",
        "domain": doc.domain, "architecture": doc.architecture,
        "frame_size": doc.frame_size, "seq_len": doc.seq_len, "max_frames": doc.max_frames,
        "appearance_dim": doc.appearance_dim, "motion_dim": doc.motion_dim,
        "training": doc.training,
        # the evaluation's headline figures (mean and std over seeds) where it wrote them
        "metrics": doc.metrics.get("summary", doc.metrics),
        "samples": [{"url": f"/models/{name}/samples/{s.file}", "label": s.label}
                    for s in engine.catalogue.samples(name)],
        "domain_check": domain_check(doc.domain_stats),
    }


def domain_check(stats) -> dict | None:
    """How uploads are scored against the training data (service/engine/domain.py), in brief:
    None when the model has no domain statistics (its answers say X-Vdis-Domain: unknown)."""
    if stats is None:
        return None
    return {"calibrated_on": stats.source,
            "limits": {"reconstruction_error": stats.reconstruction.limit,
                       "appearance_distance": stats.appearance.limit},
            "test_flagged": None if stats.test is None else stats.test.model_dump()}


@router.get("/models", summary="The models served here and what each is for")
async def models(engine: EngineDep) -> dict:
    """Every served model: its name (pass it as `model=` to any model endpoint), what it was
    trained on and expects (`domain`), its frame size, clip length, code sizes, evaluation
    figures and sample clips; `default` is the one that answers when no model is named.

    Example: `curl localhost:8000/models`
    """
    return {"default": engine.catalogue.default,
            "models": [summary(engine, name) for name in engine.catalogue.names]}


@router.get("/models/{name}", summary="One served model's manifest",
            responses=responses("unknown-model"))
async def model(name: str, engine: EngineDep) -> dict:
    """The model's manifest, but for its file layout (what /model gives for the default one),
    with its sample clips. Example: `curl localhost:8000/models/sprites-dsvae`"""
    return {**engine.resolve(name).public(), "default": name == engine.catalogue.default,
            "samples": summary(engine, name)["samples"]}


@router.get("/models/{name}/samples/{file}", response_class=FileResponse,
            summary="A sample clip of one model", responses=responses("unknown-model",
                                                                      "not-found"))
async def sample(name: str, file: str, engine: EngineDep) -> FileResponse:
    """One of the clips GET /models/{name} lists, to try the model with.

    Example: `curl localhost:8000/models/sprites-dsvae/samples/sprite-1-walk-front.mp4 -o a.mp4`
    """
    engine.resolve(name)  # 404 unknown-model
    path = engine.catalogue.sample_path(name, file)
    if path is None:
        raise Problem("not-found", f"model {name!r} has no sample clip {file!r}")
    return FileResponse(path)
