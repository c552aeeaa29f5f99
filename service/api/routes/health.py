"""GET /health, /ready, /metrics, /model and the problem types."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from service.api.deps import EngineDep, MetricsDep
from service.api.guard import PublicRoute
from service.api.problems import CATALOGUE, Problem, responses, type_uri

router = APIRouter(tags=["operations"], route_class=PublicRoute)  # no key needed


@router.get("/health")
async def health() -> dict:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {
    "description": "not ready: `reason` says why", "content": {"application/json": {}}}})
async def ready(engine: EngineDep) -> JSONResponse:
    """The model is loaded: which onnxruntime provider runs it, and the queue's state.

    With the Redis engine: Redis reachable, queue length, pending jobs and the live workers with
    their counts; 503 with a `reason` when Redis is down or no worker is beating.
    """
    info = await engine.probe()
    ready = info.pop("ready")
    body = {"status": "ready" if ready else "unavailable", "model": engine.manifest.name, **info}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(m: MetricsDep, engine: EngineDep) -> Response:
    """Prometheus text format; with the Redis engine also the queue and each worker's counts."""
    m.on_engine(await engine.probe())
    return Response(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/model")
async def model(engine: EngineDep) -> dict:
    """The loaded model's manifest, without its local file layout."""
    return engine.manifest.public()


@router.get("/problems/{slug}", responses=responses("not-found"))
async def problem_type(slug: str) -> dict:
    """What one problem `type` URI means."""
    if slug not in CATALOGUE:
        raise Problem("not-found", f"no problem type {slug!r}")
    status, title = CATALOGUE[slug]
    return {"type": type_uri(slug), "title": title, "status": status}
