"""Two clocks on every HTTP request: one for its body to arrive, one for the answer.

- The body must be in within VDIS_BODY_TIMEOUT_S of the request's start: a stalled or trickled
  upload gets 408 at that moment, the app is told the client has gone, and the connection closes
  (the unread rest of the body cannot be skipped), so it holds no worker or socket for long.
- Once the body is in, the answer must start within VDIS_REQUEST_TIMEOUT_S: decoding, queueing,
  the model and encoding the result all count. Past it the request's work is cancelled and a 504
  goes out; the engine's own deadline still drops a queued model job.

Plain ASGI, like service.api.guard: the 408 and 504 go out from here, and whatever the app sends
after them is dropped.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.guard import Gate
from service.api.problems import problem_response

# The engine's own deadline is as long and starts when the model job is queued (no earlier than
# the body's arrival); its 504 says where the time went, so it is given a moment to answer first.
ENGINE_FIRST_S = 0.25


class Deadlines:
    def __init__(self, app: ASGIApp, body_timeout_s: float, request_timeout_s: float):
        self.app = app
        self.body_timeout_s, self.request_timeout_s = body_timeout_s, request_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        body_deadline = loop.time() + self.body_timeout_s
        answer_s = self.request_timeout_s + ENGINE_FIRST_S
        body_in = False
        gate = Gate(send)
        path = scope["path"]

        async def timed_receive() -> Message:
            nonlocal body_in
            if gate.cut:
                return {"type": "http.disconnect"}
            if body_in:  # what follows the body is only ever a disconnect: no clock on it
                return await receive()
            try:
                async with asyncio.timeout_at(body_deadline):
                    message = await receive()
            except TimeoutError:
                await gate.answer(problem_response(
                    "request-timeout", f"the request body did not arrive within "
                    f"{self.body_timeout_s:g} s (VDIS_BODY_TIMEOUT_S): send it at once, or "
                    "smaller videos", path,
                    headers={"Connection": "close"}),  # the unread rest cannot be skipped
                    scope, receive)
                return {"type": "http.disconnect"}
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_in = True
                clock.reschedule(loop.time() + answer_s)
            return message

        # Until the body is in, the body's clock rules; the answer's clock starts after it.
        try:
            async with asyncio.timeout_at(body_deadline + answer_s) as clock:
                await self.app(scope, timed_receive, gate)
            return
        except TimeoutError:
            if gate.started or gate.cut or not clock.expired():
                raise
        await gate.answer(problem_response(
            "deadline-exceeded", f"the request took more than {self.request_timeout_s:g} s "
            "(VDIS_REQUEST_TIMEOUT_S) after its body arrived: ask for fewer, shorter or smaller "
            "results", path), scope, receive)
