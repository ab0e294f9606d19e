"""The one middleware every request of a worker passes through, in front of the app.

For each HTTP request and WebSocket session it does three things, cheaply enough that a worker
serves as fast as plain uvicorn does, on either of uvicorn's stacks:

* counts it, and tells ``on_stage`` as the count moves into a new stage of the request quota
  (:class:`~supervisor.child.heartbeat.RequestQuota`), before the app sees the request that
  moves it;
* refuses, with a 400 and the connection closed, what h11 refuses and llhttp (httptools) would
  hand to the app: an HTTP/0.9 request line (no version), a head larger than h11's bound. Under
  h11 these never get this far;
* hands what may be long-lived, a WebSocket or a request asking for an event stream, to
  ``tracked`` (:class:`~supervisor.child.longlived.LongLived`, which ends them when the worker
  drains), and every other request straight to ``app``.

Why the event-stream requests are picked out by their request: tracking a response means
looking at every message it sends, and that cost a tenth of what uvicorn itself spends on a
small request on uvloop and httptools. A client of an event stream says what it expects:
``EventSource`` always sends ``Accept: text/event-stream``, and so do the SSE client libraries.
A stream whose client sends no such header is drained like any other response: it runs until it
ends or the graceful timeout cuts it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from supervisor.child.heartbeat import COUNTING, RequestQuota
from supervisor.child.protocol import DEFAULT_HEAD_LIMIT, INVALID

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Any]

EVENT_STREAM = b"text/event-stream"
REFUSAL_HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")]
HEADER_OVERHEAD = 4  # ": " and CRLF, per header line

logger = logging.getLogger("uvicorn.error")


class Gate:
    """ASGI middleware: counts, refuses what h11 refuses, routes the long-lived to ``tracked``."""

    def __init__(self, app: ASGIApp, tracked: ASGIApp, quota: RequestQuota | None = None,
                 on_stage: Callable[[int], None] = lambda stage: None,
                 head_limit: int = DEFAULT_HEAD_LIMIT) -> None:
        self.app = app
        self.tracked = tracked
        self.quota = quota or RequestQuota(0)
        self.on_stage = on_stage
        self.head_limit = head_limit
        self.count = 0
        self.stage = COUNTING
        self._next_change: float = self.quota.next_change(COUNTING)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        # This runs on every request: one coroutine frame, no calls on the common path.
        kind = scope["type"]
        if kind == "http":
            self.count += 1
            if self.count >= self._next_change:
                self._stage_moved()
            headers = scope["headers"]
            size = len(scope["raw_path"]) + len(scope["query_string"]) + HEADER_OVERHEAD * len(headers)
            stream = False
            for name, value in headers:
                size += len(name) + len(value)
                if name == b"accept" and EVENT_STREAM in value:
                    stream = True
            if size > self.head_limit or scope["http_version"] == "0.9":
                await refuse(send)
            elif stream:
                await self.tracked(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        elif kind == "websocket":
            self.count += 1
            if self.count >= self._next_change:
                self._stage_moved()
            await self.tracked(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _stage_moved(self) -> None:
        stage = self.quota.stage(self.count)
        self._next_change = self.quota.next_change(stage)
        if stage != self.stage:
            self.stage = stage
            self.on_stage(stage)


async def refuse(send: Any) -> None:
    """A 400 in uvicorn's words, the connection closed after it, as uvicorn answers a malformed request."""
    logger.warning(INVALID)
    body = INVALID.encode()
    await send({"type": "http.response.start", "status": 400,
                "headers": [*REFUSAL_HEADERS, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

