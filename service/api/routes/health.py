"""GET /health, /ready, /metrics, /model and the problem types."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from service.api.deps import EngineDep, MetricsDep
from service.api.guard import PublicRoute
from service.api.problems import CATALOGUE, Problem, responses, type_uri

router = APIRouter(tags=["operations"], route_class=PublicRoute)  # no key needed


@router.get("/health", summary="Is the service running",
            responses={200: {"content": {"application/json": {"example": {"status": "ok"}}}}})
async def health() -> dict:
    """Answers `{"status": "ok"}` while the process is alive.

    Example: `curl localhost:8000/health`
    """
    return {"status": "ok"}


@router.get("/ready", summary="Is the model loaded and able to answer", responses={503: {
    "description": "not ready: `reason` says why", "content": {"application/json": {}}}})
async def ready(engine: EngineDep) -> JSONResponse:
    """200 once the model is loaded, with what runs it (CPU or CUDA) and how busy it is.

    With the Redis engine: Redis reachable, queue length, pending jobs and the live workers with
    their counts; 503 with a `reason` when Redis is down or no worker is beating.

    Example: `curl localhost:8000/ready`
    """
    info = await engine.probe()
    ready = info.pop("ready")
    body = {"status": "ready" if ready else "unavailable", "model": engine.manifest.name, **info}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response, summary="Counters for Prometheus",
            responses={200: {"content": {"text/plain": {}}}})
async def metrics(m: MetricsDep, engine: EngineDep) -> Response:
    """Requests, latencies and batch sizes in Prometheus' text format; with the Redis engine
    also the queue and each worker's counts. Example: `curl localhost:8000/metrics`"""
    m.on_engine(await engine.probe())
    return Response(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/model", summary="What the loaded model is")
async def model(engine: EngineDep) -> dict:
    """The loaded model's manifest: its name, frame size, clip length, code sizes, how it was
    trained and how it scored. Example: `curl localhost:8000/model`"""
    return engine.manifest.public()


@router.get("/problems/{slug}", summary="What an error type means", responses={
    200: {"content": {"application/json": {"example": {
        "type": "/problems/too-short", "title": CATALOGUE["too-short"][1], "status": 422}}}},
    **responses("not-found")})
async def problem_type(slug: str) -> dict:
    """The title and status of one error `type` (the `type` of every error answer links here).
    Example: `curl localhost:8000/problems/too-short`"""
    if slug not in CATALOGUE:
        raise Problem("not-found", f"no problem type {slug!r}")
    status, title = CATALOGUE[slug]
    return {"type": type_uri(slug), "title": title, "status": status}
