"""GET /jobs/{id}: the state, then the answer, of a request sent with `?async=true`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service.api.media import VIDEO_CONTENT
from service.api.problems import UPLOAD_PROBLEMS, Problem, responses

router = APIRouter(tags=["jobs"])


@router.get("/jobs/{job_id}", response_class=Response,
            summary="The state or answer of an async request", responses={
    200: {"description": "the job's state, or once done its request's own answer",
          "content": VIDEO_CONTENT},
    **responses(*UPLOAD_PROBLEMS, "not-found")})
async def job(job_id: str, request: Request) -> Response:
    """`{"status": "queued" | "running"}` while it runs, then the request's own answer.

    A request that failed keeps its problem+json as the answer (`X-Vdis-Job-Status: failed`).

    POST /encode, /decode, /swap or /generate with `?async=true` answers 202 at once with the
    job's URL (also in `Location`); answers are kept VDIS_ASYNC_RESULT_TTL_S seconds.

    Example: `curl localhost:8000/jobs/JOB_ID -o answer.mp4`
    """
    record = await request.app.state.jobs.get(job_id)
    if record is None:
        raise Problem("not-found", f"no job {job_id!r} (unknown, or its answer expired)")
    state, body = record
    if state["status"] not in ("done", "failed"):
        return JSONResponse({"id": job_id, "status": state["status"]})
    # done: the request's own answer; failed: its problem+json (a 4xx it earned, or a 500)
    return Response(body, status_code=state["code"],
                    headers={**state["headers"], "X-Vdis-Job-Status": state["status"]})
