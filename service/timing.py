"""Where a request's time goes: phases timed along the request path, answered in a
`Server-Timing` header (browsers' developer tools show it) and summed in /metrics.

Phases: `decode` (uploads -> clips, in threads), `queue` (waiting for a batch, or for a worker
through Redis), `model` (the onnxruntime calls the request was part of), `encode` (results ->
mp4/gif/png/npz/json), and `other`, the rest: HTTP, multipart parsing, validation, pixel
conversions, the event loop. Work runs in parallel (the two uploads of /swap decode at once, its
two clips are encoded side by side): each instant of a request counts once, for the first phase
in PHASES running then, so the phases add up to the request's time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PHASES = ("model", "queue", "decode", "encode")
Interval = tuple[str, float, float]  # (phase, start, end) in time.perf_counter() seconds

# The request's list of intervals; threads started with asyncio.to_thread and tasks see the same
# list (they copy the context, and the list is shared, not copied).
_current: ContextVar[list[Interval] | None] = ContextVar("vdis_timing", default=None)


def begin() -> list[Interval]:
    """Start collecting intervals in this context (a request, a worker's job)."""
    intervals: list[Interval] = []
    _current.set(intervals)
    return intervals


def record(name: str, start: float, end: float) -> None:
    """One interval of `name`; nothing when no request is being timed."""
    intervals = _current.get()
    if intervals is not None:
        intervals.append((name, start, end))  # list.append is atomic: threads may record


@contextmanager
def phase(name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        record(name, start, time.perf_counter())


def attribute(intervals: list[Interval], start: float, end: float) -> dict[str, float]:
    """Seconds of [start, end] per phase (PHASES, then `other`); each instant counted once."""
    spent = dict.fromkeys((*PHASES, "other"), 0.0)
    edges = sorted({start, end, *(min(max(t, start), end)
                                  for _, a, b in intervals for t in (a, b))})
    for left, right in zip(edges, edges[1:], strict=False):
        middle = (left + right) / 2
        active = {name for name, a, b in intervals if a <= middle < b}
        name = next((p for p in PHASES if p in active), "other")
        spent[name] += right - left
    return spent


def total(intervals: list[Interval], name: str) -> float:
    """Seconds covered by the intervals of one phase (overlaps counted once)."""
    chosen = [i for i in intervals if i[0] == name]
    if not chosen:
        return 0.0
    start, end = min(i[1] for i in chosen), max(i[2] for i in chosen)
    return attribute(chosen, start, end)[name]


def header(spent: dict[str, float]) -> str:
    """`Server-Timing` value: each phase and `total`, in milliseconds."""
    parts = [f"{name};dur={1000 * s:.2f}" for name, s in spent.items()]
    return ", ".join([*parts, f"total;dur={1000 * sum(spent.values()):.2f}"])


# observe(scope, status, seconds per phase): what the app does with each request's timings
Observer = Callable[[Scope, int, dict[str, float]], None]


class ServerTiming:
    """ASGI middleware: times each HTTP request by phase, up to the start of its answer, adds the
    `Server-Timing` header and hands the phases to `observe` (the metrics).

    Plain ASGI rather than `@app.middleware("http")`: that one runs the app in a task of its own
    and streams the body through it, which cost more CPU per request than the header is worth.
    """

    def __init__(self, app: ASGIApp, observe: Observer):
        self.app, self.observe = app, observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        intervals = begin()  # the app runs in this task, so in this context

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                spent = attribute(intervals, started, time.perf_counter())
                message["headers"] = [*message.get("headers", ()),
                                      (b"server-timing", header(spent).encode())]
                self.observe(scope, message["status"], spent)
            await send(message)

        await self.app(scope, receive, timed_send)
