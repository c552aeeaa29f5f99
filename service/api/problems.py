"""RFC 9457 problem details: one stable `type` per error a caller can cause.

Each type is served at `/problems/{slug}`, so the URI in an answer explains itself, and each
route declares the problems it can answer with (`responses`), so the OpenAPI document lists them.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.engine.base import (
    DeadlineExceeded,
    EngineBusy,
    EngineUnavailable,
    InvalidCodes,
    JobFailed,
    ModelUnavailable,
)
from service.engine.catalogue import UnknownModel
from service.videoio import VideoError

log = logging.getLogger(__name__)
MEDIA_TYPE = "application/problem+json"

# slug -> (status, title)
CATALOGUE: dict[str, tuple[int, str]] = {
    "invalid-body": (400, "The request body could not be parsed"),
    "empty-video": (400, "The uploaded file is empty"),
    "not-a-video": (400, "The upload is not a video FFmpeg can read"),
    "truncated-video": (400, "The video is cut short or damaged"),
    "unauthorized": (401, "A valid API key is needed"),
    "unsupported-codec": (415, "The video's codec cannot be decoded here"),
    "unsupported-media-type": (415, "The request's content type is not accepted here"),
    "too-large": (413, "The upload is larger than the limit"),
    "too-many-pixels": (422, "The video's frames have more pixels than the limit"),
    "too-short": (422, "The video has fewer frames than were asked for"),
    "too-long": (422, "The video has more frames than the service decodes"),
    "too-much-output": (422, "The answer would have more pixels than the limit"),
    "invalid-parameters": (422, "A parameter or the request body is invalid"),
    "invalid-codes": (422, "The codes do not fit this model"),
    "out-of-domain": (422, "The input is unlike the model's training data (strict=true)"),
    "not-found": (404, "No such resource"),
    "unknown-model": (404, "No model of that name is served here"),
    "method-not-allowed": (405, "Method not allowed"),
    "not-acceptable": (406, "The Accept header allows no media type this endpoint sends"),
    "request-timeout": (408, "The request body did not arrive in time"),
    "not-ready": (503, "The model is not loaded"),
    "busy": (503, "Too many jobs are queued; retry after the Retry-After seconds"),
    "engine-unavailable": (503, "The queue to the model workers cannot be reached"),
    "model-unavailable": (503, "No live model worker serves the model asked for"),
    "deadline-exceeded": (504, "The request did not finish before its deadline"),
    "dead-lettered": (500, "The job stopped every worker that took it and was set aside"),
    "job-failed": (500, "A model worker could not run the job"),
    "internal-error": (500, "Internal server error"),
}
_BY_STATUS = {400: "invalid-body", 401: "unauthorized", 404: "not-found",
              405: "method-not-allowed", 406: "not-acceptable", 413: "too-large",
              415: "unsupported-media-type",
              422: "invalid-parameters", 503: "not-ready"}
# What FastAPI says of a body it cannot parse (a broken multipart form, say), and ours instead.
_UNPARSED_BODY = "There was an error parsing the body"
_UNPARSED_BODY_DETAIL = ("the request body could not be parsed: send the videos as "
                         "multipart/form-data (curl -F video=@clip.mp4), or the codes of /decode "
                         "as application/json")

# The problems of the endpoints that take an upload or codes and run the model.
MODEL_PROBLEMS = ("invalid-body", "unauthorized", "not-acceptable", "too-large",
                  "unsupported-media-type", "invalid-parameters", "invalid-codes", "job-failed",
                  "dead-lettered", "busy", "engine-unavailable", "deadline-exceeded",
                  "request-timeout", "too-much-output", "unknown-model", "model-unavailable",
                  "out-of-domain")
UPLOAD_PROBLEMS = MODEL_PROBLEMS + ("empty-video", "not-a-video", "truncated-video",
                                    "unsupported-codec", "too-many-pixels", "too-short",
                                    "too-long")


def _names(names: list[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def _body_fields(request: Request) -> list[str]:
    """The fields the route's request body takes, as its OpenAPI document declares them."""
    route = request.scope.get("route")
    operation = request.app.openapi()["paths"].get(getattr(route, "path", ""), {})
    body = operation.get(request.method.lower(), {}).get("requestBody", {})
    for content in body.get("content", {}).values():
        schema = content.get("schema", {})
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            schema = request.app.openapi()["components"]["schemas"][name]
        return list(schema.get("properties", {}))
    return []


class ProblemDetails(BaseModel):
    """An error answer (application/problem+json, RFC 9457); `errors` lists invalid parameters."""

    model_config = ConfigDict(extra="allow")
    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


def responses(*slugs: str) -> dict[int | str, dict]:
    """OpenAPI `responses` for the problems a route can answer with, one entry per status."""
    schema = ProblemDetails.model_json_schema()
    titles: dict[int, list[str]] = {}
    for slug in slugs:
        status, title = CATALOGUE[slug]
        titles.setdefault(status, []).append(f"{title} (`/problems/{slug}`)")
    return {status: {"description": "; ".join(names),
                     "content": {MEDIA_TYPE: {"schema": schema}}}
            for status, names in sorted(titles.items())}


class Problem(Exception):
    """Raised by routes and dependencies; rendered as application/problem+json."""

    def __init__(self, slug: str, detail: str, **extra):
        self.slug, self.detail, self.extra = slug, detail, extra
        self.status = CATALOGUE[slug][0]


def type_uri(slug: str) -> str:
    return f"/problems/{slug}"


def problem_response(slug: str, detail: str, instance: str = "", headers: dict | None = None,
                     **extra) -> JSONResponse:
    status, title = CATALOGUE[slug]
    body = {"type": type_uri(slug), "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def install(app: FastAPI) -> None:
    """Map every exception a request can raise to a problem+json answer."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, error: Problem):
        return problem_response(error.slug, error.detail, request.url.path, **error.extra)

    @app.exception_handler(VideoError)
    async def _video(request: Request, error: VideoError):
        return problem_response(error.kind, str(error), request.url.path)

    @app.exception_handler(InvalidCodes)
    async def _codes(request: Request, error: InvalidCodes):
        return problem_response("invalid-codes", str(error), request.url.path)

    @app.exception_handler(EngineBusy)
    async def _busy(request: Request, error: EngineBusy):
        return problem_response("busy", str(error), request.url.path,
                                headers={"Retry-After": str(error.retry_after_s)})

    @app.exception_handler(EngineUnavailable)
    async def _unavailable(request: Request, error: EngineUnavailable):
        return problem_response("engine-unavailable", str(error), request.url.path,
                                headers={"Retry-After": "1"})

    @app.exception_handler(UnknownModel)
    async def _unknown_model(request: Request, error: UnknownModel):
        return problem_response("unknown-model", str(error), request.url.path,
                                models=error.names)

    @app.exception_handler(ModelUnavailable)
    async def _model_unavailable(request: Request, error: ModelUnavailable):
        return problem_response("model-unavailable", str(error), request.url.path,
                                headers={"Retry-After": "1"})

    @app.exception_handler(DeadlineExceeded)
    async def _deadline(request: Request, error: DeadlineExceeded):
        return problem_response("deadline-exceeded", str(error), request.url.path)

    @app.exception_handler(JobFailed)
    async def _failed(request: Request, error: JobFailed):
        slug = error.kind if error.kind in CATALOGUE else "job-failed"
        return problem_response(slug, str(error), request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError):
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
                  for e in error.errors()]
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        missing = [e["loc"][1] for e in errors
                   if e["type"] == "missing" and e["loc"][:1] == ["body"] and len(e["loc"]) == 2]
        if missing:  # a misnamed form field (`file` for `video`) shows up as a missing one
            sent = sorted(error.body.keys()) if hasattr(error.body, "keys") else []
            expected = _body_fields(request)
            detail = (f"missing {_names(missing)}; the request sent {_names(sent) or 'no fields'}"
                      f", and {request.url.path} takes {_names(expected)}")
            if len(missing) == 1 and len(set(sent) - set(expected)) == 1:
                detail += f": rename `{(set(sent) - set(expected)).pop()}` to `{missing[0]}`"
            return problem_response("invalid-parameters", detail, request.url.path,
                                    errors=errors, sent=sent, expected=expected)
        return problem_response("invalid-parameters", detail, request.url.path, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException):
        slug = _BY_STATUS.get(error.status_code, "internal-error")
        detail = str(error.detail)
        detail = _UNPARSED_BODY_DETAIL if detail == _UNPARSED_BODY else detail
        # The headers matter: a 405 says which methods are allowed in `Allow`.
        return problem_response(slug, detail, request.url.path, headers=error.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return problem_response("internal-error", "an unexpected error occurred; it is logged",
                                request.url.path)
