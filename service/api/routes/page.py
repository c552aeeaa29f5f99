"""GET /: the web page (static files in service/static, served under /static)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from service.api.guard import PublicRoute

STATIC = Path(__file__).resolve().parents[2] / "static"

router = APIRouter(include_in_schema=False, route_class=PublicRoute)  # no key needed


@router.get("/")
async def page() -> FileResponse:
    """Try the model in a browser: swaps, generated motions, a grid of every pairing."""
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/favicon.ico")
async def favicon() -> FileResponse:
    """The page's icon (browsers ask for it at this path, whatever the page links)."""
    return FileResponse(STATIC / "favicon.ico", media_type="image/x-icon")
