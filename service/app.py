"""Assembles the app: settings, engine (built once in the lifespan), metrics, routes, errors.

Run: python -m uvicorn service.app:app
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from service import iothreads, timing
from service import jobs as async_jobs
from service.api import deadline, guard, problems
from service.api.routes import codes, generate, health, jobs, models, page, swap
from service.engine import build_engine
from service.metrics import Metrics
from service.settings import Settings, get_settings

DESCRIPTION = """Split a short video into its **appearance** (how it looks: one code for the
clip) and its **motion** (how it moves: one code per frame), swap them between videos, or make
up new motions for a look. Upload videos as multipart form fields (`video`, or `appearance`
and `motion`); results are MP4 by default (`format=gif|png|npz|json`, or an `Accept` header).
Several models may be served: `GET /models` says what each is for; every model endpoint takes
`model=NAME` (default: the service's default model). Sample clips to try: `/static/samples/`
(each model's own under `GET /models`). Errors are RFC 9457 problem+json with a `type` that
links to `/problems/{slug}`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        iothreads.use_io_threads(settings.IO_THREADS)
        engine = build_engine(settings, metrics.on_batch)
        await engine.start()
        app.state.engine = engine
        runner = async_jobs.build_runner(engine, settings)
        app.state.async_runner, app.state.jobs = runner, runner.store
        await runner.start(app)
        try:
            yield
        finally:
            await runner.close()
            await engine.close()

    # FastAPIOffline serves Swagger UI's JS and CSS from the package, not a CDN. ReDoc is off:
    # its bundle loads its logo from cdn.redoc.ly, and /docs serves the same document. Swagger's
    # validator badge would call validator.swagger.io: off too.
    app = FastAPIOffline(
        title="vdis", version="0.1.0", lifespan=lifespan, redoc_url=None,
        swagger_ui_parameters={"validatorUrl": None},
        description=DESCRIPTION,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    problems.install(app)
    guard.open_framework_routes(app.router.routes)  # the docs; every route below is vdis's own
    for module in (codes, swap, generate, jobs, models, health, page):
        app.include_router(module.router)
    # The web page's scripts, styles and sample clips (plain files, nothing from a CDN).
    app.mount("/static", StaticFiles(directory=page.STATIC), name="static")

    # Middleware runs in the reverse order of adding: the guard (below), timing and metrics
    # (the 202s of async jobs included), the deadlines, the async-job switch, then the routes.
    app.add_middleware(async_jobs.AsyncJobs)
    # The body's clock (408) and the answer's (504), inside timing so the metrics count them.
    app.add_middleware(deadline.Deadlines, body_timeout_s=settings.BODY_TIMEOUT_S,
                       request_timeout_s=settings.REQUEST_TIMEOUT_S)
    app.add_middleware(timing.ServerTiming, observe=metrics.on_request)
    # Added last, so it runs first: keys and body size are checked before anything else.
    app.add_middleware(guard.RequestGuard, api_keys=settings.api_keys(),
                       max_body_bytes=settings.max_body_bytes(), routes=app.router.routes)
    if settings.api_keys():
        app.openapi = lambda: guard.document_keys(FastAPI.openapi(app), app.router.routes)
    return app


app = create_app()
