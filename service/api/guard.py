"""The gate in front of every request: API keys, and the size of the request body.

A plain ASGI middleware outside everything else, so a request without a valid key or with too
big a body costs no parsing, no spooling to disk and no async job:
- with VDIS_API_KEYS set, every API route needs a key in `X-API-Key` or
  `Authorization: Bearer <key>`, else 401 with `WWW-Authenticate`, unless its router declares
  it open (`APIRouter(route_class=PublicRoute)`: /health, /ready, /metrics, /model(s), /problems
  and the web page; the docs and static files are not API routes). Being keyed is a property of
  the route, read from the app's own routes: a new endpoint needs a key unless it says
  otherwise. Keys are compared as SHA-256 digests with `hmac.compare_digest`, against every
  key, so neither a key's content nor its length nor which key matched shows in the time taken
  (docs/reliability.md says why these stay open).
- a body whose Content-Length is over the limit is refused before a byte of it is read (413);
  a body without one (chunked) is counted while the app reads it, and refused the moment it
  passes the limit: the 413 goes out at once and the app is told the client has gone.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator, Sequence

from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.problems import problem_response

HOW_TO_SEND = "send it in the X-API-Key header or as `Authorization: Bearer <key>`"


class PublicRoute(APIRoute):
    """The route class of routers whose routes need no key (health, the page, ...)."""


def flat_routes(routes: Sequence[BaseRoute]) -> Iterator[BaseRoute]:
    """Every route, those of included routers too (FastAPI keeps an included router as one
    entry that holds the original; vdis includes its routers without a prefix)."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from flat_routes(inner.routes)
        else:
            yield route


def route_of(routes: Sequence[BaseRoute], scope: Scope) -> BaseRoute | None:
    """The route a request goes to (a full match, else one on the path alone, as for a 405)."""
    partial = None
    for route in flat_routes(routes):
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return route
        if match == Match.PARTIAL and partial is None:
            partial = route
    return partial


def open_framework_routes(routes: Sequence[BaseRoute]) -> None:
    """Mark the routes the framework made itself (the OpenAPI document and the docs pages,
    there before vdis includes its routers) as needing no key."""
    for route in flat_routes(routes):
        route.vdis_public = True


def is_keyed(route: BaseRoute | None) -> bool:
    """Every API route is keyed unless it is a PublicRoute or one of the framework's own docs
    routes; static files are not API routes, and a path no route matches is a plain 404."""
    return (isinstance(route, APIRoute) and not isinstance(route, PublicRoute)
            and not getattr(route, "vdis_public", False))


def _digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


class RequestGuard:
    """API keys (when `api_keys` is not empty) and a cap of `max_body_bytes` on each body."""

    def __init__(self, app: ASGIApp, api_keys: tuple[bytes, ...], max_body_bytes: int,
                 routes: Sequence[BaseRoute] = ()):
        self.app = app
        self.key_digests = tuple(_digest(k) for k in api_keys)
        self.max_body_bytes = max_body_bytes
        self.routes = routes  # the app's own list: routes added later count too

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value for name, value in scope["headers"]}
        path = scope["path"]
        if self.key_digests and is_keyed(route_of(self.routes, scope)):
            refusal = self._check_key(headers, path)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body_bytes:
            await self._too_large(f"the request body is {int(length)} bytes", path)(
                scope, receive, send)
            return
        await self.app(scope, *self._capped(scope, receive, send))

    def _check_key(self, headers: dict[bytes, bytes], path: str):
        """None when the request carries a valid key, else the 401 to send."""
        offered = headers.get(b"x-api-key")
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        if offered is None and scheme.lower() == b"bearer":
            offered = token.strip()
        if offered:
            digest = _digest(offered)
            valid = False
            for key in self.key_digests:  # every key, whichever matches
                valid |= hmac.compare_digest(digest, key)
            if valid:
                return None
            detail = f"the API key is not valid; {HOW_TO_SEND} (a key from VDIS_API_KEYS)"
            challenge = 'Bearer realm="vdis", error="invalid_token"'
        else:
            detail = f"{path} needs an API key: {HOW_TO_SEND}"
            challenge = 'Bearer realm="vdis"'
        return problem_response("unauthorized", detail, path,
                                headers={"WWW-Authenticate": challenge})

    def _too_large(self, what: str, path: str):
        return problem_response(
            "too-large", f"{what}; the limit is {self.max_body_bytes} bytes (two files of "
            "VDIS_MAX_UPLOAD_BYTES plus the form's framing): send smaller videos", path)

    def _capped(self, scope: Scope, receive: Receive, send: Send) -> tuple[Receive, Send]:
        """receive and send for the app: the body counted as it arrives, the 413 sent early."""
        received = 0
        gate = Gate(send)

        async def capped_receive() -> Message:
            nonlocal received
            if gate.cut:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # The app stops reading as if the client had gone; what it answers is dropped.
                    await gate.answer(self._too_large(
                        f"the request body passed {self.max_body_bytes} bytes", scope["path"]),
                        scope, receive)
                    return {"type": "http.disconnect"}
            return message

        return capped_receive, gate


class Gate:
    """The app's `send`, cut off once a middleware answers in its place (413, 408, 504)."""

    def __init__(self, send: Send):
        self.send = send
        self.started = self.cut = False  # the app's answer has begun; the app is cut off

    async def __call__(self, message: Message) -> None:
        if self.cut:
            return
        self.started = self.started or message["type"] == "http.response.start"
        await self.send(message)

    async def answer(self, response, scope: Scope, receive: Receive) -> None:
        """Send `response` instead of the app's answer, unless that has begun already."""
        if not self.started and not self.cut:
            await response(scope, receive, self.send)
        self.cut = True


def document_keys(openapi: dict, routes: Sequence[BaseRoute]) -> dict:
    """Declare the keys in an OpenAPI document: the two schemes, required on the keyed routes."""
    openapi.setdefault("components", {})["securitySchemes"] = {
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "bearer": {"type": "http", "scheme": "bearer"},
    }
    keyed = {(route.path_format, method.lower()) for route in flat_routes(routes)
             if is_keyed(route) for method in route.methods}
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            if (path, method) in keyed:
                operation["security"] = [{"apiKey": []}, {"bearer": []}]
    return openapi
