"""Assembles the app: settings, engine (built once in the lifespan), metrics, routes, errors.

Run: python -m uvicorn service.app:app
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from service import jobs as async_jobs
from service.api import problems
from service.api.routes import codes, generate, health, jobs, page, swap
from service.engine import build_engine
from service.metrics import Metrics
from service.settings import Settings, get_settings

# Multipart framing around the files; a body bigger than the files' limit plus this is refused
# before it is parsed (a body without Content-Length is checked file by file instead).
MULTIPART_SLACK_BYTES = 64 * 1024


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = build_engine(settings, metrics.on_batch)
        await engine.start()
        app.state.engine = engine
        app.state.jobs = async_jobs.build_store(engine, settings.ASYNC_RESULT_TTL_S)
        app.state.async_tasks = set()
        try:
            yield
        finally:
            for task in app.state.async_tasks:
                task.cancel()
            await asyncio.gather(*app.state.async_tasks, return_exceptions=True)
            await engine.close()

    # FastAPIOffline serves Swagger UI's JS and CSS from the package, not a CDN.
    app = FastAPIOffline(
        title="vdis", version="0.1.0", lifespan=lifespan,
        description="Appearance and motion codes from short videos; swaps and generation.",
    )
    app.state.settings = settings
    app.state.metrics = metrics
    problems.install(app)
    for module in (codes, swap, generate, jobs, health, page):
        app.include_router(module.router)
    # The web page's scripts, styles and sample clips (plain files, nothing from a CDN).
    app.mount("/static", StaticFiles(directory=page.STATIC), name="static")

    @app.middleware("http")
    async def measure(request: Request, call_next):
        length = request.headers.get("content-length", "")
        limit = 2 * settings.MAX_UPLOAD_BYTES + MULTIPART_SLACK_BYTES
        if length.isdigit() and int(length) > limit:
            return problems.problem_response(
                "too-large", f"the request body is {length} bytes; the limit is {limit}",
                request.url.path)
        started = time.perf_counter()
        if async_jobs.wants_async(request):
            response = await async_jobs.submit(request)
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(path, request.method, str(response.status_code)).inc()
        metrics.latency.labels(path).observe(time.perf_counter() - started)
        return response

    return app


app = create_app()
