"""``/live``: an event stream and a WebSocket echo, the app's long-lived connections.

``GET /live/events`` is a ``text/event-stream``: a ``hello`` event naming the worker process that
serves it, then a ``tick`` every ``TICK_SECONDS``. ``/live/echo`` is a WebSocket that sends a
``hello`` text naming the worker, then echoes every text message back. Both show what happens
on a reload: the old worker ends the stream and closes the socket with 1012 (service restart),
and the client's reconnect reaches the new worker, whose pid the first message names.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

TICK_SECONDS = 1.0


def sse(event: str, data: object) -> bytes:
    """One server-sent event, framed: ``event:`` and ``data:`` lines and the blank line that ends it."""
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def events(request: Request) -> StreamingResponse:
    async def stream() -> AsyncIterator[bytes]:
        pid = os.getpid()
        yield sse("hello", {"pid": pid})
        count = 0
        while True:
            await asyncio.sleep(TICK_SECONDS)
            count += 1
            yield sse("tick", {"pid": pid, "count": count})

    # no-store and no proxy buffering: each event must reach the client when it is sent.
    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(json.dumps({"hello": os.getpid()}))
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass


routes = [Route("/live/events", events), WebSocketRoute("/live/echo", echo)]
